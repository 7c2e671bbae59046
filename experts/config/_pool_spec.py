"""Pool files: which experts exist, how each one runs, and which roles they play.

A pool file is YAML validated by the pydantic models below. Every mistake is reported as
``PoolFileError`` naming the file, the field path (``experts[2].backend``) and what is
wrong, so a bad deployment fails at start and not on the first request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from experts.config._deployment_spec import DeploymentRouting, HostedDeployment
from experts.config._file_errors import describe, read_yaml
from experts.config._resilience_spec import PoolResilienceSpec, ResilienceSpec, merged
from experts.config._serve_spec import ExpertServeSpec, ServeSpec
from experts.types import AnswerKind

# "moe": a local Mixture-of-Experts checkpoint on our MoE kernel path (experts/moe/);
# "echo" exists only for overhead benchmarks and fault injection.
BackendName = Literal["litellm", "local", "moe", "echo"]

_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

POOLS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "pools"


class PoolFileError(ValueError):
    """A pool file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationDefaults(_Strict):
    """Sampling defaults for an expert; a request may override each of them."""

    max_tokens: Annotated[int, Field(ge=1, le=32768)] = 256
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.2
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    stop: list[str] = Field(default_factory=list)


class BatchingSpec(_Strict):
    """How the expert's actor groups queued requests into one backend call."""

    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    max_wait_ms: Annotated[float, Field(ge=0.0, le=10_000.0)] = 10.0


class ResourceSpec(_Strict):
    """What the expert's Ray actor asks the cluster for, and how torch runs inside it."""

    num_cpus: Annotated[float, Field(ge=0.0)] = 0.25
    num_gpus: Annotated[float, Field(ge=0.0)] = 0.0
    memory_gb: Annotated[float, Field(ge=0.0)] | None = None
    torch_threads: Annotated[int, Field(ge=1, le=256)] = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    custom: dict[str, Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=dict,
        description="Ray custom resources the actor (or Serve replica) needs, e.g. {gpu_node: 1} to place it on the "
        "node started with `ray start --resources '{\"gpu_node\": 4}'`",
    )

    @field_validator("num_gpus")
    @classmethod
    def _whole_gpus_above_one(cls, value: float) -> float:
        # a fraction shares one GPU; more than one means whole GPUs, reserved together on one node
        if value > 1 and not float(value).is_integer():
            raise ValueError("above 1, num_gpus must be a whole number of GPUs")
        return value


class ExpertResidencySpec(_Strict):
    """What a residency-managed expert occupies when resident (see ``ResidencySpec``)."""

    memory_gb: Annotated[float, Field(ge=0.0)] | None = Field(
        None, description="memory the loaded expert takes; default: measured from its weights on disk"
    )


class PriceSpec(_Strict):
    """Price in currency units per one million tokens (0 for self-hosted models)."""

    input_per_1m: Annotated[float, Field(ge=0.0)] = 0.0
    output_per_1m: Annotated[float, Field(ge=0.0)] = 0.0


class ExpertSpec(_Strict):
    """One expert: a model behind a backend, with a system prompt and declared skills."""

    name: str
    backend: BackendName
    model: str = Field(description="LiteLLM model string, HF directory/.gguf path, or 'embedded:<name>'")
    description: str = ""
    system_prompt: str = ""
    skills: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=dict, description="skill -> declared competence in [0, 1]"
    )
    routable: bool = Field(True, description="False for experts that only play a role (e.g. aggregator)")
    generation: GenerationDefaults = GenerationDefaults()
    batching: BatchingSpec = BatchingSpec()
    concurrency: Annotated[int, Field(ge=1, le=256)] = 1
    resources: ResourceSpec = ResourceSpec()
    price: PriceSpec | None = None
    active_params_b: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="active parameters in billions, the cost measure for self-hosted models"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="backend-specific options (api_base, api_key_env, dtype...)"
    )
    profile_name: str | None = Field(None, description="this expert's name in the measured profiles (default: name)")
    residency: ExpertResidencySpec = ExpertResidencySpec()
    serve: ExpertServeSpec | None = Field(
        None,
        description="this expert's Ray Serve deployment (replicas, autoscaling); default: the pool's serve.experts",
    )
    resilience: ResilienceSpec = Field(
        ResilienceSpec(), description="timeout, retries and circuit breaker; keys set here override the pool's"
    )
    deployments: list[HostedDeployment] = Field(
        default_factory=list,
        description="litellm experts: several endpoints behind this one expert, balanced by LiteLLM's Router",
    )
    deployment_routing: DeploymentRouting = DeploymentRouting()

    @model_validator(mode="after")
    def _deployments_of_a_hosted_model(self) -> ExpertSpec:
        if not self.deployments:
            return self
        if self.backend != "litellm":
            raise ValueError(f"deployments: only a litellm expert has them (this one is {self.backend})")
        names = [deployment.name for deployment in self.deployments]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"deployments: names must differ; repeated: {', '.join(repeated)}")
        if not any(deployment.role == "primary" for deployment in self.deployments):
            raise ValueError("deployments: at least one must have role primary (the fallbacks back it up)")
        return self

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not _NAME_PATTERN.match(value):
            raise ValueError(
                "must be 1-63 characters of lowercase letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        return value

    @field_validator("skills", mode="before")
    @classmethod
    def _skills_list_means_full_competence(cls, value: Any) -> Any:
        # `skills: [math, code]` is the common short form of `skills: {math: 1.0, code: 1.0}`.
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise ValueError("a skill list must hold skill names (strings)")
            return {skill: 1.0 for skill in value}
        return value

    @field_validator("skills")
    @classmethod
    def _skill_names_normalised(cls, value: dict[str, float]) -> dict[str, float]:
        return {skill.strip().lower().replace(" ", "_"): score for skill, score in value.items()}

    @property
    def on_gpu(self) -> bool:
        """Whether the expert's weights live in GPU memory (so parking in host RAM frees something)."""
        return self.resources.num_gpus > 0 or self.resources.device == "cuda"

    @property
    def supports_tools(self) -> bool:
        """Whether the request's tools and tool_choice reach this expert's model.

        The ``litellm`` backend passes them on; ``local`` and ``moe`` hold a forced call (``tool_choice``
        ``required`` or a named function) to the call's JSON with their grammar, and with ``auto`` show the model
        the tools and hold any call it makes to a call of an offered function (a conversation's tool exchanges reach
        them written out, see ``experts.types.as_text_turns``).
        """
        return self.backend in TOOL_BACKENDS

    def supports(self, field: str) -> bool:
        """Whether this expert honours the request's ``field`` (``tools``, ``tool_choice``, ``response_format``).

        ``response_format``: the ``litellm`` backend passes it on, ``local`` and ``moe`` enforce it with a grammar.
        """
        return self.backend in (FORMAT_BACKENDS if field == "response_format" else TOOL_BACKENDS)

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Cost from the pool file's price, or None when the pool file sets none."""
        if self.price is None:
            return None
        return (prompt_tokens * self.price.input_per_1m + completion_tokens * self.price.output_per_1m) / 1e6


class ProfileSource(_Strict):
    """Where measured expert profiles live: a JSON export, or a Redis key space."""

    json_file: str | None = Field(None, alias="json", description="profile JSON, relative to the pool file")
    redis: str | None = Field(None, description="redis://host:port/db holding versioned profiles")
    key_space: str | None = Field(None, description="Redis key space (default: the pool's name)")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ProfileSource:
        if (self.json_file is None) == (self.redis is None):
            raise ValueError("give exactly one of 'json' (a file) or 'redis' (a URL)")
        return self


Policy = Literal["skills", "category", "cost", "cascade", "escalate"]


class RoutingSpec(_Strict):
    """Pool-wide routing settings. Without ``profiles`` the router scores declared skills lexically."""

    k: Annotated[int, Field(ge=1, le=16)] | None = Field(
        2, description="experts per query; null lets the profiled router choose adaptively up to max_experts"
    )
    policy: Policy = "skills"
    max_experts: Annotated[int, Field(ge=1, le=16)] = 3
    target: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    temperature: Annotated[float, Field(ge=0.0)] = 0.0
    cost_lambda: Annotated[float, Field(ge=0.0)] = 0.0
    budget_per_query: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="cost policy: no plan whose expected cost exceeds this (cost units)"
    )
    budget: Annotated[float, Field(gt=0.0, le=100.0)] | None = Field(
        None,
        description="cost/escalate: mean cost over traffic <= this x the best single expert's (fits lambda "
        "or the escalation threshold on the profiled questions); a request's moesaic.budget overrides it",
    )
    cascade_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    escalate_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.0, description="escalate: the first stage stops on agreement only if its mean competence reaches this"
    )
    profiles: ProfileSource | None = None


class ResidencySpec(_Strict):
    """Pool-wide residency: local experts load on demand within a memory budget per node (runtime/dispatch/).

    Without this section every expert loads at start and stays loaded. With it, the actors of
    local experts start empty and a dispatcher loads, parks and unloads them as work arrives.
    """

    budget_gb: Annotated[float, Field(gt=0.0)] = Field(
        description="memory per node for resident experts: GPU memory for experts on GPUs, else host RAM"
    )
    host_budget_gb: Annotated[float, Field(ge=0.0)] | None = Field(
        None, description="host RAM for parked GPU experts (null: no limit); on CPU nodes eviction goes to disk"
    )
    latency_bound_s: Annotated[float, Field(gt=0.0)] = Field(
        30.0, description="a request queued longer than this makes its expert run next"
    )
    max_running: Annotated[int, Field(ge=1, le=64)] = Field(2, description="experts generating at the same time")
    prefetch: bool = Field(True, description="load the expert needed next while another one runs, if it fits")


# backends that pass OpenAI tools and tool_choice to their model
TOOL_BACKENDS = ("litellm", "local", "moe")  # local, moe: a forced call held by the grammar; auto: text
# backends whose answers follow a response_format: passed on (litellm), or grammar-constrained decoding on our
# engines (local, and moe, which decodes with the same engine)
FORMAT_BACKENDS = ("litellm", "local", "moe")

# backends whose actors the residency manager loads and unloads (echo: for tests and benchmarks only)
RESIDENCY_BACKENDS = ("local", "moe", "echo")


Strategy = Literal["passthrough", "vote", "synthesize", "rank"]


class AggregationSpec(_Strict):
    """How k answers become one: the strategy, the consensus short-cut, the aggregator's own budget."""

    strategy: Strategy = "synthesize"
    consensus: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        1.0, description="skip the aggregator when this share of the answers agree; null: never"
    )
    answer_kind: AnswerKind | Literal["auto"] = Field(
        "auto", description="answer extractor for votes: auto, choice, number, exact, text"
    )
    max_tokens: Annotated[int, Field(ge=1, le=32768)] | None = Field(
        None, description="the aggregator's token budget (default: its own generation.max_tokens)"
    )
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = Field(
        0.0, description="the aggregator's and judge's temperature; null: their own default"
    )
    choice: ProfileSource | None = Field(
        None, description="measured aggregator choice (moesaic bench-aggregators); default: beside the profiles"
    )


class RolesSpec(_Strict):
    """Experts named by role. Each value must be the name of an expert in the pool."""

    aggregator: str | None = None
    judge: str | None = Field(None, description="picks the best answer for the rank strategy (default: aggregator)")
    generalist: str | None = None
    keywords: str | None = Field(None, description="expert that lists the skills a query needs (LLM path)")


class PoolSpec(_Strict):
    """A whole pool file."""

    name: str = "pool"
    description: str = ""
    routing: RoutingSpec = RoutingSpec()
    aggregation: AggregationSpec = AggregationSpec()
    roles: RolesSpec = RolesSpec()
    skill_keywords: dict[str, list[str]] = Field(
        default_factory=dict, description="extra lexical keywords per skill, merged over the built-in ones"
    )
    residency: ResidencySpec | None = Field(None, description="load local experts on demand within a budget")
    resilience: PoolResilienceSpec = Field(
        PoolResilienceSpec(), description="failure handling defaults for every expert, and re-recruiting"
    )
    serve: ServeSpec = Field(ServeSpec(), description="Ray Serve: ingress replicas or autoscaling, HTTP proxy")
    transport: Literal["auto", "ray"] = Field(
        "auto",
        description="how calls reach expert actors: auto = a Unix socket when the actor runs on the caller's node "
        "(about 0.1 ms instead of a Ray call's milliseconds), Ray otherwise; ray = always Ray calls",
    )
    experts: Annotated[list[ExpertSpec], Field(min_length=1)]
    _source_dir: Path = PrivateAttr(default_factory=Path.cwd)

    def document(self) -> dict[str, Any]:
        """The validated pool as the plain mapping a pool file holds (defaults left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    @property
    def source_dir(self) -> Path:
        """The pool file's folder: relative paths inside the file are resolved from here."""
        return self._source_dir

    @model_validator(mode="after")
    def _names_and_roles_consistent(self) -> PoolSpec:
        seen: set[str] = set()
        for expert in self.experts:
            if expert.name in seen:
                raise ValueError(f"expert name {expert.name!r} appears twice; names must be unique")
            seen.add(expert.name)
        for role in ("aggregator", "judge", "generalist", "keywords"):
            target = getattr(self.roles, role)
            if target is not None and target not in seen:
                raise ValueError(f"roles.{role} names {target!r}, which is not an expert of this pool")
        if not any(expert.routable for expert in self.experts):
            raise ValueError("no expert is routable; set routable: true on at least one expert")
        return self

    def expert(self, name: str) -> ExpertSpec:
        for expert in self.experts:
            if expert.name == name:
                return expert
        raise KeyError(name)

    @property
    def routable_experts(self) -> list[ExpertSpec]:
        return [expert for expert in self.experts if expert.routable]

    def resilience_for(self, name: str) -> ResilienceSpec:
        """``name``'s failure handling: the pool's ``resilience`` section with the expert's own keys on top."""
        return merged(self.resilience, self.expert(name).resilience)

    def residency_managed(self, name: str) -> bool:
        """True when the pool has a ``residency`` section and ``name`` runs on a backend it loads and unloads."""
        return self.residency is not None and self.expert(name).backend in RESIDENCY_BACKENDS


def resolve_pool_path(pool: str | Path) -> Path:
    """A pool argument is a path, or the name of a file in ``deploy/pools`` (``default``)."""
    candidate = Path(pool)
    if candidate.is_file():
        return candidate
    named = POOLS_DIR / f"{pool}.yaml"
    if named.is_file():
        return named
    where = "a folder, not a file" if candidate.is_dir() else f"no file {candidate.resolve()}"
    known = ", ".join(pool_names()) or "none"
    raise PoolFileError(
        f"pool {str(pool)!r}: {where}, and no pool of that name in {POOLS_DIR} (pools by name: {known}); "
        "pass a path to a YAML pool file or one of those names"
    )


def pool_names() -> list[str]:
    """The pools that can be named rather than given by path: ``deploy/pools``' files, ``examples/moe`` style for
    those in its folders."""
    if not POOLS_DIR.is_dir():
        return []
    return sorted(path.relative_to(POOLS_DIR).with_suffix("").as_posix() for path in POOLS_DIR.rglob("*.yaml"))


def parse_pool(raw: Any, source: str) -> PoolSpec:
    """Validate already-parsed YAML; ``source`` is the file name used in errors."""
    if not isinstance(raw, dict):
        raise PoolFileError(f"{source}: the top level must be a mapping with an 'experts' list")
    try:
        return PoolSpec.model_validate(raw)
    except ValidationError as error:
        details = describe(error, raw, lists=[("experts",)])
        raise PoolFileError(f"{source}: invalid pool file\n{details}") from None


def load_pool(pool: str | Path) -> PoolSpec:
    """Read and validate a pool file; raise ``PoolFileError`` with file and field on any problem."""
    path = resolve_pool_path(pool)
    raw = read_yaml(path, PoolFileError)
    spec = parse_pool(raw, str(path))
    spec._source_dir = path.resolve().parent
    return spec
