"""Service settings: which pool, which Ray, where to listen. Flags override environment."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, Field


class ServeSettings(BaseModel):
    """How ``moesaic serve`` runs.

    Environment: MOESAIC_POOL, MOESAIC_RAY_ADDRESS, MOESAIC_HOST, MOESAIC_PORT, MOESAIC_CONFIG.
    """

    pool: str = Field("default", description="pool file path, or a name in deploy/pools")
    ray_address: str | None = Field(None, description="join this Ray cluster instead of starting a local instance")
    num_cpus: Annotated[int, Field(ge=1)] | None = Field(None, description="CPUs for a local Ray instance")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    config: str | None = Field(None, description="service config file: Redis, auth, limits (deploy/service.yaml)")

    @classmethod
    def from_env(cls, **overrides: object) -> ServeSettings:
        values: dict[str, object] = {}
        for field, variable in (
            ("pool", "MOESAIC_POOL"),
            ("ray_address", "MOESAIC_RAY_ADDRESS"),
            ("host", "MOESAIC_HOST"),
            ("port", "MOESAIC_PORT"),
            ("config", "MOESAIC_CONFIG"),
        ):
            if os.environ.get(variable):
                values[field] = os.environ[variable]
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.model_validate(values)
