"""``deploy/ensure_redis.sh`` and ``deploy/ensure_chromium.sh``, which ``make test`` runs first: nothing to do, an
install, or a clear message with what to type.

The install branch (root with apt-get) changes the machine, so it is exercised by CI on a fresh machine, not
here; these run the script with a PATH made for the case.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "ensure_redis.sh"


def tools(folder: Path, *names: str) -> Path:
    """A folder holding only ``names`` (links to the real commands), to stand for a machine's PATH."""
    folder.mkdir()
    for name in names:
        real = shutil.which(name)
        assert real is not None, f"{name} is needed to run this test"
        (folder / name).symlink_to(real)
    return folder


def run(path: Path) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run([bash, str(SCRIPT)], env={"PATH": str(path)}, capture_output=True, text=True, timeout=30)


def test_an_installed_redis_server_is_enough(tmp_path: Path) -> None:
    path = tools(tmp_path / "bin", "id", "cat")
    (path / "redis-server").write_text("#!/bin/sh\nexit 0\n")
    (path / "redis-server").chmod(0o755)
    done = run(path)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_without_redis_and_without_a_way_to_install_it_the_run_stops_with_what_to_do(tmp_path: Path) -> None:
    done = run(tools(tmp_path / "bin", "id", "cat"))  # no redis-server, no apt-get, brew or dnf
    assert done.returncode == 1
    assert "redis-server is not installed, and this user cannot install it" in done.stderr
    assert "install Redis 7 with your system's package manager" in done.stderr
    assert "then run make test again" in done.stderr
    assert "make serve does not need it" in done.stderr


CHROMIUM_SCRIPT = SCRIPT.with_name("ensure_chromium.sh")


def run_chromium(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    command = [bash, str(CHROMIUM_SCRIPT)]
    return subprocess.run(command, env={"PATH": str(path), **env}, capture_output=True, text=True, timeout=30)


def test_an_installed_chromium_or_a_named_one_is_enough(tmp_path: Path) -> None:
    path = tools(tmp_path / "bin", "id", "cat")
    assert run_chromium(path, MOESAIC_CHROMIUM="/opt/chromium").stderr == ""
    (path / "chromium").write_text("#!/bin/sh\nexit 0\n")
    (path / "chromium").chmod(0o755)
    done = run_chromium(path)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_without_chromium_and_a_way_to_install_it_the_suite_still_runs_and_says_what_to_type(tmp_path: Path) -> None:
    done = run_chromium(tools(tmp_path / "bin", "id", "cat"))  # no chromium, no apt-get
    assert done.returncode == 0  # the browser tests skip, saying why; the rest of the suite runs
    assert (
        "the console's browser" in done.stderr and "apt-get install -y --no-install-recommends chromium" in done.stderr
    )
