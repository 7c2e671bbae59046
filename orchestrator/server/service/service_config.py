"""The service configuration file: Redis, cache, journal, API keys, limits and default rate limits.

``moesaic serve --config FILE`` (or ``MOESAIC_CONFIG``) reads it; ``deploy/service.yaml`` is the
annotated example. Every section is optional and the defaults are safe for one process on a
laptop: no Redis (in-process stores), auth decided by the bind address, generous limits.
A mistake stops the server at start with the file and the field, the way pool files do, e.g.
``service.yaml: invalid service config / limits.max_concurrent: Input should be greater than or equal to 1``.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from experts.config import describe, read_yaml

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0.0)]


class ServiceConfigError(ValueError):
    """A service config that cannot be used; the message names the file and the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSection(_Section):
    url: str | None = Field(None, description="redis://HOST:PORT/DB; without it every store is in process")
    url_env: Annotated[str, Field(pattern=ENV_NAME.pattern)] | None = Field(
        None,
        description="the environment variable holding the URL instead (a password stays out of files; "
        "Kubernetes sets it from a Secret)",
    )
    required: bool = Field(False, description="refuse to start when Redis does not answer (instead of falling back)")

    @model_validator(mode="after")
    def _one_source(self) -> RedisSection:
        if self.url is not None and self.url_env is not None:
            raise ValueError("give redis.url or redis.url_env, not both")
        return self

    def resolved_url(self) -> str | None:
        """The URL to connect to: ``url``, else the value of ``url_env`` (``ServiceConfigError`` when it is unset)."""
        if self.url_env is None:
            return self.url
        value = os.environ.get(self.url_env, "").strip()
        if not value:
            raise ServiceConfigError(
                f"redis.url_env names the environment variable {self.url_env}, which is not set; "
                f"export {self.url_env}=redis://HOST:PORT/DB (or remove redis.url_env)"
            )
        return value


class CacheSection(_Section):
    enabled: bool = True
    ttl_s: PositiveInt = Field(600, description="seconds a cached answer is served")
    max_entries: PositiveInt = Field(10_000, description="bound of the in-process fallback (LRU)")


class ResponsesSection(_Section):
    ttl_s: PositiveInt = Field(
        3600, description="seconds a /v1/responses answer can be continued (previous_response_id)"
    )
    max_entries: PositiveInt = Field(10_000, description="bound of the in-process fallback (LRU)")


class JournalSection(_Section):
    enabled: bool = True
    stream: Annotated[str, Field(min_length=1)] = "moesaic:journal"
    maxlen: PositiveInt = Field(100_000, description="entries kept (approximately, in Redis)")
    memory_max_bytes: PositiveInt = Field(
        64 * 1024 * 1024, description="bytes of entries kept in process (no Redis, or while it is down)"
    )


class Permission(StrEnum):
    """What a key may do beyond its ``models``; each is granted by name (``permissions: [routing.evaluate]``)."""

    ROUTING_EVALUATE = "routing.evaluate"  # POST /v1/routing/evaluate: CPU-heavy work on an uploaded table


class KeyRecord(_Section):
    """One API key as stored: its name, the sha256 of the key (never the key), and what it may do.

    ``models`` are patterns (``*`` matches anything: ``expert/*``, ``moesaic*``). Limits left out
    take the config's ``rate_limits`` defaults and ``limits.max_tokens``. ``budget_usd_per_day``
    is checked before each request against what the key spent since 00:00 UTC.
    """

    name: str
    hash: str = Field(description="sha256 hex digest of the key (moesaic keys create prints it)")
    models: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = ["*"]
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    max_tokens: PositiveInt | None = Field(None, description="the most max_tokens one request may ask for")
    budget_usd_per_day: PositiveFloat | None = Field(
        None, description="dollars the key may spend per UTC day (answers' moesaic.cost); beyond: 429"
    )
    permissions: list[Permission] = Field(
        default_factory=list,
        description="what the key may do beyond chat and routing: routing.evaluate (POST /v1/routing/evaluate)",
    )
    created: str | None = Field(None, description="when the key was made (informational)")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not KEY_NAME.match(name):
            raise ValueError("a key name is 1-64 letters, digits or _ . @ -, starting with a letter or digit")
        return name

    @field_validator("hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        value = value.removeprefix("sha256:").lower()
        if not SHA256_HEX.match(value):
            raise ValueError("hash must be the 64 hex digits of sha256(key); `moesaic keys create` prints it")
        return value


class AuthSection(_Section):
    mode: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: off when binding 127.0.0.1/localhost/::1, on for any other address"
    )
    keys: list[KeyRecord] = Field(default_factory=list)
    redis_hash: Annotated[str, Field(min_length=1)] = Field(
        "moesaic:keys", description="Redis hash of name -> key record (moesaic keys create --redis)"
    )
    refresh_s: Annotated[float, Field(ge=0.0, le=3600.0)] = Field(
        2.0, description="how long the Redis keys are reused before being read again (revocation delay)"
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_booleans(cls, mode: Any) -> Any:
        """YAML reads an unquoted ``on``/``off`` (and ``yes``/``no``, ``true``/``false``) as a boolean: take it as
        the mode it spells."""
        if isinstance(mode, bool):
            return "on" if mode else "off"
        return mode

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: list[KeyRecord]) -> list[KeyRecord]:
        names = [key.name for key in keys]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"key names must be unique; repeated: {', '.join(repeated)}")
        return keys


class LimitsSection(_Section):
    max_body_bytes: PositiveInt = Field(4 * 1024 * 1024, description="larger request bodies get 413")
    max_tokens: Annotated[int, Field(ge=1, le=32768)] = Field(8192, description="the most max_tokens a request asks")
    max_concurrent: PositiveInt = Field(64, description="/v1 requests served at once")
    max_queue: Annotated[int, Field(ge=0)] = Field(256, description="requests waiting for a slot; beyond: 429")
    queue_timeout_s: Annotated[float, Field(gt=0.0)] = Field(30.0, description="longest wait for a slot")
    shutdown_grace_s: Annotated[float, Field(ge=0.0)] = Field(30.0, description="time in-flight requests get")
    sse_keepalive_s: Annotated[float, Field(ge=0.0)] = Field(
        15.0, description="a stream silent this long sends an SSE comment (proxy idle timeouts); 0: never"
    )
    schema_max_bytes: PositiveInt = Field(
        16_384, description="largest JSON schema (response_format, each tool's parameters), as compact JSON"
    )
    schema_max_depth: PositiveInt = Field(16, description="deepest nesting of such a schema")
    schema_max_properties: PositiveInt = Field(256, description="most property names such a schema declares")
    schema_max_pattern_cost: PositiveInt = Field(
        1000, description="largest expansion of a regex `pattern` in such a schema (counted repeats multiply)"
    )
    tools_max_bytes: PositiveInt = Field(65_536, description="largest `tools` list of one request, as compact JSON")


class HttpSection(_Section):
    """Who may reach the API from a browser: the ``Host`` names it answers to and the cross-origin pages allowed.

    Without API keys (auth off on a loopback bind) any web page the user opens could otherwise post to the API
    (a cross-site request) or reach it under its own name (DNS rebinding), so then only loopback names are
    answered and cross-origin browser requests are refused unless listed here.
    """

    allowed_hosts: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        None,
        description="Host header names answered (a port is ignored; '*' any; '.example.com' a domain and its "
        "subdomains); default: loopback names while auth is off, any host while auth is on",
    )
    allowed_origins: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list,
        description="origins (scheme://host[:port]) whose pages may send cross-origin requests; same-origin pages "
        "(the console) always may",
    )


class RoutingEvaluationSection(_Section):
    """``POST /v1/routing/evaluate``: eval-router on an uploaded outcome table, bounded."""

    enabled: bool = Field(True, description="false: the endpoint answers 404")
    max_rows: PositiveInt = Field(20_000, description="most questions (rows) an uploaded table may hold")
    max_columns: PositiveInt = Field(512, description="most columns an uploaded table may hold")
    max_table_bytes: PositiveInt = Field(
        32 * 1024 * 1024, description="largest table once decoded (base64 and Parquet compression undone)"
    )
    timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)] = Field(
        120.0, description="an evaluation running longer is stopped (its worker killed) and answered 413"
    )


class RateLimitSection(_Section):
    """Defaults for every key (and for everyone when auth is off); a key's own values win."""

    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    budget_usd_per_day: PositiveFloat | None = Field(None, description="dollars per key per UTC day")


class McpSection(_Section):
    enabled: bool = Field(True, description="serve MCP on the API app at /mcp (when the mcp extra is installed)")


class ServiceConfig(_Section):
    """The whole file. Each section has safe defaults, so ``ServiceConfig()`` is a working config."""

    redis: RedisSection = RedisSection()
    cache: CacheSection = CacheSection()
    responses: ResponsesSection = ResponsesSection()
    journal: JournalSection = JournalSection()
    auth: AuthSection = AuthSection()
    limits: LimitsSection = LimitsSection()
    rate_limits: RateLimitSection = RateLimitSection()
    mcp: McpSection = McpSection()
    http: HttpSection = HttpSection()
    routing_evaluation: RoutingEvaluationSection = RoutingEvaluationSection()


def parse_service_config(raw: Any, source: str) -> ServiceConfig:
    """Validate already-parsed YAML; ``source`` names the file in errors."""
    if raw is None:
        return ServiceConfig()
    if not isinstance(raw, dict):
        raise ServiceConfigError(f"{source}: the top level must be a mapping of sections (redis, auth, limits, ...)")
    try:
        return ServiceConfig.model_validate(raw)
    except ValidationError as error:
        details = describe(error, raw, lists=[("auth", "keys")], secret="hash")
        raise ServiceConfigError(f"{source}: invalid service config\n{details}") from None


def load_service_config(path: str | Path) -> ServiceConfig:
    """Read and validate a service config file; raise ``ServiceConfigError`` naming file and field."""
    path = Path(path)
    raw = read_yaml(path, ServiceConfigError, "the service config", " (see deploy/service.yaml for an example)")
    return parse_service_config(raw, str(path))
