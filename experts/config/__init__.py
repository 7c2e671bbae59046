"""Pool-file schemas: read and validated in the driver, carried into every actor as plain pydantic models.

Runs in: any process (no Ray, no torch). May import: ``experts.types`` (``AnswerKind`` included), ``experts.errors``.

Public surface: ``PoolSpec``/``ExpertSpec`` and the section models (``pool_spec``), ``load_pool``/``parse_pool``,
``PoolFileError`` (a pool file's mistakes, with file and field), the ``resilience`` and ``serve`` sections, and
``ConfigFileError`` (``file_errors``: YAML problems with their line), ``model_source`` (where a local model's files
and its dequantised copy are), ``engine_choice``.
"""

from experts.config.pool_spec import (
    ExpertSpec,
    PoolFileError,
    PoolSpec,
    ProfileSource,
    RoutingSpec,
    load_pool,
    parse_pool,
    resolve_pool_path,
)

__all__ = [
    "ExpertSpec",
    "PoolFileError",
    "PoolSpec",
    "ProfileSource",
    "RoutingSpec",
    "load_pool",
    "parse_pool",
    "resolve_pool_path",
]
