"""Pool-file schemas: read and validated in the driver, carried into every actor as plain pydantic models.

Runs in: any process (no Ray, no torch). May import: ``experts.types`` (``AnswerKind`` included), ``experts.errors``.

Public surface (import it from here; the modules are private): ``PoolSpec``/``ExpertSpec`` and the section models
(``_pool_spec``), ``load_pool``/``parse_pool``, ``PoolFileError`` (a pool file's mistakes, with file and field), the
resilience sections (``_resilience_spec``), the ``serve`` sections (``_serve_spec``), ``read_yaml``/``describe``
(``_file_errors``: YAML problems with their line), where a local model's files and its dequantised copy are
(``_model_source``), and which engine runs a local expert (``_engine_choice``).
"""

from experts.config._deployment_spec import DeploymentRouting, HostedDeployment
from experts.config._engine_choice import (
    PYTHON_VARIABLE,
    Engine,
    EngineChoice,
    EngineEnvironment,
    EngineUnavailable,
    choose_engine,
    cpu_flags,
    fast_bf16,
    find_engine_environment,
)
from experts.config._file_errors import describe, read_yaml
from experts.config._model_source import (
    EMBEDDED_MODELS,
    ModelSource,
    cache_root,
    dequantised_dir,
    prepared_directory,
    resolve_model,
)
from experts.config._pool_spec import (
    ExpertSpec,
    PoolFileError,
    PoolSpec,
    ProfileSource,
    ResourceSpec,
    RoutingSpec,
    load_pool,
    parse_pool,
    resolve_pool_path,
)
from experts.config._resilience_spec import BreakerSpec, ResilienceSpec, RetrySpec
from experts.config._serve_spec import AutoscalingSpec, ExpertServeSpec, ServeSpec

__all__ = [
    "EMBEDDED_MODELS",
    "PYTHON_VARIABLE",
    "AutoscalingSpec",
    "BreakerSpec",
    "DeploymentRouting",
    "Engine",
    "EngineChoice",
    "EngineEnvironment",
    "EngineUnavailable",
    "ExpertServeSpec",
    "ExpertSpec",
    "HostedDeployment",
    "ModelSource",
    "PoolFileError",
    "PoolSpec",
    "ProfileSource",
    "ResilienceSpec",
    "RetrySpec",
    "ResourceSpec",
    "RoutingSpec",
    "ServeSpec",
    "cache_root",
    "choose_engine",
    "cpu_flags",
    "dequantised_dir",
    "describe",
    "fast_bf16",
    "find_engine_environment",
    "load_pool",
    "parse_pool",
    "prepared_directory",
    "read_yaml",
    "resolve_model",
    "resolve_pool_path",
]
