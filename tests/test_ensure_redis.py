"""``deploy/ensure_redis.sh``, which ``make test`` runs first: nothing to do, or a clear stop with what to type.

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
