"""The package map of docs/ARCHITECTURE.md, checked: which package may import which.

Read from the source with ``ast`` (nothing is imported), so a new import that points the wrong way fails here
with the file and the edge, before it turns into a cycle or drags torch into the driver.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("experts", "aggregator", "router", "orchestrator")

# Dependencies point one way: a layer imports its own layer and the ones before it, never a later one.
LAYERS = (
    "experts",
    "aggregator",
    "router",
    "orchestrator.pipeline",
    "orchestrator.server",
    "orchestrator.frameworks",
    "orchestrator.cli",
)
# Inside one expert's Ray actor (torch, model weights) versus the driver that calls the actors.
ACTOR_SIDE = ("experts.actor", "experts.backends", "experts.engine", "experts.moe", "experts.vllm")
DRIVER_SIDE = ("experts.runtime",)
# The actor-side modules the rest may name: the actor class (to start actors), plain data, weight preparation.
ACTOR_SIDE_DOORS = {
    "experts.actor.expert_actor": ("experts.runtime._pool",),
    "experts.actor.replica": ("experts.runtime._deployments",),  # the expert's Serve replica class, to deploy it
    "experts.actor.engine_group_replica": ("experts.runtime._deployments",),  # an engine group's, likewise
    "experts.vllm.engine_actor": ("experts.runtime._engines",),  # the shared engine's actor class, to start it
    "experts.moe": None,  # its surface: per-request MoE routing options and the layer's spec, plain data
    "experts.moe.options": None,
    "experts.moe.spec": None,
    "experts.engine": ("orchestrator.cli",),  # its surface: `moesaic prepare` dequantises ahead of time
}
# What one top-level package may import of another: its surfaces (an ``__init__`` that exports what others may use,
# or a module of plain data). Everything else is internal, whatever its name.
SURFACES = (
    "experts",
    "experts.types",
    "experts.errors",
    "experts.config",
    "experts.runtime",
    "experts.engine",
    "experts.moe",
    "router",
    "router.offline",
    "aggregator",
)


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module
    target: str  # the imported module (or module.name)
    line: int

    def __str__(self) -> str:
        return f"{self.source.replace('.', '/')}.py:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def edges() -> list[Edge]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = module_name(path)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    targets = [node.module]
                else:
                    continue
                found += [Edge(source, t, node.lineno) for t in targets if t.split(".")[0] in PACKAGES]
    return found


def within(module: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer(module: str) -> int:
    return max(i for i, prefix in enumerate(LAYERS) if within(module, prefix) or prefix == module.split(".")[0])


def test_the_scan_sees_the_code() -> None:
    found = edges()
    assert len(found) > 200
    assert ("orchestrator.pipeline.nodes", "router") in {(e.source, e.target) for e in found}


def test_dependencies_point_one_way() -> None:
    upward = [edge for edge in edges() if layer(edge.target) > layer(edge.source)]
    assert not upward, "imports of a later layer (see docs/ARCHITECTURE.md):\n" + "\n".join(map(str, upward))


def test_the_driver_and_the_actor_keep_to_their_side() -> None:
    crossing = []
    for edge in edges():
        if within(edge.source, ACTOR_SIDE) and within(edge.target, DRIVER_SIDE):
            crossing.append(edge)
        if within(edge.target, ACTOR_SIDE) and not within(edge.source, ACTOR_SIDE):
            door = next((d for d in ACTOR_SIDE_DOORS if within(edge.target, d)), None)
            allowed = ACTOR_SIDE_DOORS.get(door) if door else ()
            if door is None or (allowed is not None and not within(edge.source, allowed)):
                crossing.append(edge)
    assert not crossing, "imports across the actor boundary:\n" + "\n".join(map(str, crossing))


def test_the_aggregator_and_router_reach_the_experts_only_through_shared_data() -> None:
    shared = ("experts.types", "experts.errors", "experts.config")
    reaching = [
        edge
        for edge in edges()
        if within(edge.source, ("aggregator", "router")) and within(edge.target, "experts")
        if not within(edge.target, shared) and not (within(edge.source, "aggregator") and edge.target == "experts")
    ]
    assert not reaching, "\n".join(map(str, reaching))
    aggregator_config = [e for e in edges() if within(e.source, "aggregator") and within(e.target, "experts.config")]
    assert not aggregator_config, "\n".join(map(str, aggregator_config))


def private_owner(module: str) -> str | None:
    """The package a private module (a name part starting with ``_``) belongs to; None for a public module."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def test_a_private_module_is_imported_only_inside_its_own_package() -> None:
    private = [
        edge for edge in edges() if (owner := private_owner(edge.target)) is not None and not within(edge.source, owner)
    ]
    assert not private, "import the package's surface instead:\n" + "\n".join(map(str, private))


def test_another_package_is_reached_only_through_its_surfaces() -> None:
    deep = [
        edge
        for edge in edges()
        if edge.target.split(".")[0] != edge.source.split(".")[0] and edge.target not in SURFACES
    ]
    assert not deep, f"import one of {', '.join(SURFACES)} instead:\n" + "\n".join(map(str, deep))


def test_every_package_says_where_it_runs_and_what_it_may_import() -> None:
    silent = []
    for package in PACKAGES:
        for init in sorted((ROOT / package).rglob("__init__.py")):
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            if init.parent.name in PACKAGES:  # a top-level package: its map of subpackages is enough
                continue
            if "Runs in:" not in doc or "May import:" not in doc:
                silent.append(str(init.relative_to(ROOT)))
    assert not silent, "package docstrings without 'Runs in:' and 'May import:': " + ", ".join(silent)
