"""Service settings: which pool, which Ray, where to listen.

Read by pydantic-settings from the environment (``MOESAIC_POOL``, ``MOESAIC_RAY_ADDRESS``, ``MOESAIC_NUM_CPUS``,
``MOESAIC_HOST``, ``MOESAIC_PORT``, ``MOESAIC_CONFIG``; an empty variable counts as unset) under the values given
in code or on the command line, which win.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServeSettings(BaseSettings):
    """How ``moesaic serve`` (and an app built by ``create_app``) runs."""

    model_config = SettingsConfigDict(env_prefix="MOESAIC_", env_ignore_empty=True, extra="forbid")

    pool: str = Field("default", description="pool file path, or a name in deploy/pools")
    ray_address: str | None = Field(None, description="join this Ray cluster instead of starting a local instance")
    num_cpus: Annotated[int, Field(ge=1)] | None = Field(None, description="CPUs for a local Ray instance")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    config: str | None = Field(None, description="service config file: Redis, auth, limits (deploy/service.yaml)")

    @classmethod
    def from_env(cls, **overrides: object) -> ServeSettings:
        """The environment's settings, with every override that is not ``None`` on top."""
        return cls(**{key: value for key, value in overrides.items() if value is not None})
