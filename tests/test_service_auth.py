"""API keys: the auto mode's decision, hashing, the config file's errors, `moesaic keys`, and 401/403/400/429
over real uvicorn with the official openai client (keys in the config file and in Redis)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from typer.testing import CliRunner

from experts.runtime._pool import ExpertPool
from orchestrator.cli.main import app as cli
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.auth import Principal, auth_enabled, hash_key, is_loopback, new_key
from orchestrator.server.service.service_config import (
    KeyRecord,
    ServiceConfig,
    ServiceConfigError,
    load_service_config,
    parse_service_config,
)
from tests.conftest import ServerThread, echo_pool_spec

ROOT = Path(__file__).resolve().parents[1]
HELLO = [{"role": "user", "content": "hello there"}]


# -- pure decisions ------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "LOCALHOST", "::1", "[::1]"])
def test_auto_mode_is_off_on_a_loopback_bind(host: str) -> None:
    assert is_loopback(host) and not auth_enabled("auto", host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "192.168.0.7", "fe80::1", "moesaic.internal"])
def test_auto_mode_is_on_for_any_other_address(host: str) -> None:
    assert auth_enabled("auto", host)


def test_explicit_modes_win_over_the_address() -> None:
    assert auth_enabled("on", "127.0.0.1") and not auth_enabled("off", "0.0.0.0")


def test_keys_are_random_and_only_their_sha256_is_kept() -> None:
    first, second = new_key(), new_key()
    assert first != second and re.fullmatch(r"msk-[A-Za-z0-9_-]{43}", first)
    assert hash_key(first) == hashlib.sha256(first.encode()).hexdigest()
    record = KeyRecord(name="ci", hash="sha256:" + hash_key(first).upper())
    assert record.hash == hash_key(first) and record.models == ["*"]


@pytest.mark.parametrize(
    ("text", "mode"), [("on", "on"), ("off", "off"), ("yes", "on"), ("false", "off"), ('"on"', "on")]
)
def test_auth_mode_takes_yamls_on_and_off_as_written(tmp_path: Path, text: str, mode: str) -> None:
    """Unquoted, YAML reads ``on``/``off`` as booleans; the mode is what they spell."""
    config = tmp_path / "service.yaml"
    config.write_text(f"auth:\n  mode: {text}\n", encoding="utf-8")
    assert load_service_config(config).auth.mode == mode


def test_principal_models_are_patterns() -> None:
    principal = Principal("team", models=("moesaic", "expert/*"))
    assert principal.allows("moesaic") and principal.allows("expert/math")
    assert not principal.allows("moesaic/cost") and not principal.allows("other")


# -- the config file -----------------------------------------------------------------------------
def test_the_example_config_is_valid() -> None:
    config = load_service_config(ROOT / "deploy" / "service.yaml")
    assert config.auth.mode == "auto" and config.auth.keys[0].name == "example-team"
    assert config.limits.max_concurrent == 64 and config.rate_limits.requests_per_minute is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("limits:\n  max_concurrent: 0\n", "limits.max_concurrent: Input should be greater than or equal to 1 (got 0)"),
        ("auth:\n  mode: maybe\n", "auth.mode: Input should be 'auto', 'on' or 'off' (got 'maybe')"),
        ("caching: {}\n", "caching: Extra inputs are not permitted"),
        ("auth:\n  keys:\n    - {name: ci, hash: abc}\n", "auth.keys[0] (name: 'ci').hash: hash must be the 64 hex"),
        (
            f"auth:\n  keys:\n    - {{name: ci, hash: {'a' * 64}}}\n    - {{name: ci, hash: {'b' * 64}}}\n",
            "auth.keys: key names must be unique; repeated: ci",
        ),
        (
            "auth:\n  keys:\n    - {name: 'has space', hash: " + "c" * 64 + "}\n",
            "auth.keys[0] (name: 'has space').name",
        ),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("limits: [unclosed\n", "not valid YAML"),
    ],
)
def test_config_errors_name_the_file_and_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "service.yaml"
    path.write_text(text)
    with pytest.raises(ServiceConfigError) as caught:
        load_service_config(path)
    assert str(path) in str(caught.value) and expected in str(caught.value)


def test_a_missing_config_file_says_where_to_look(tmp_path: Path) -> None:
    with pytest.raises(ServiceConfigError, match="cannot read the service config.*deploy/service.yaml"):
        load_service_config(tmp_path / "nope.yaml")
    assert parse_service_config(None, "empty.yaml") == ServiceConfig()


# -- moesaic keys --------------------------------------------------------------------------------
def printed_key(output: str) -> str:
    match = re.search(r"^(msk-\S+)$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def test_keys_create_prints_the_key_once_and_the_record_for_the_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["keys", "create", "ci", "--models", "moesaic,expert/*", "--rpm", "30"])
    assert result.exit_code == 0, result.output
    key = printed_key(result.output)
    record_text = result.output.split("restart the service:\n", 1)[1].split("\nthe key", 1)[0]
    config = tmp_path / "service.yaml"
    config.write_text("auth:\n  keys:\n" + "\n".join("    " + line for line in record_text.strip().splitlines()))
    loaded = load_service_config(config).auth.keys[0]
    assert loaded.hash == hash_key(key) and loaded.models == ["moesaic", "expert/*"]
    assert loaded.requests_per_minute == 30 and key not in config.read_text()
    listed = CliRunner().invoke(cli, ["keys", "list", "--config", str(config)])
    assert listed.exit_code == 0 and "ci" in listed.output and key not in listed.output
    # Redis down (nothing listens on port 1): the file's keys are still listed, with a warning saying why
    down = "redis://:secret-pw@127.0.0.1:1/0"
    listed = CliRunner().invoke(cli, ["keys", "list", "--config", str(config), "--redis", down])
    assert listed.exit_code == 0 and "ci" in listed.output and "cannot reach Redis" in listed.output
    assert "secret-pw" not in listed.output  # the URL is shown without its password
    alone = CliRunner().invoke(cli, ["keys", "list", "--redis", down])  # nothing else to list: an error
    assert alone.exit_code == 2 and "cannot reach Redis" in alone.output
    refused = CliRunner().invoke(cli, ["keys", "revoke", "ci", "--config", str(config)])
    assert refused.exit_code == 2 and "delete its entry under auth.keys" in refused.output
    bad = CliRunner().invoke(cli, ["keys", "create", "no spaces please"])
    assert bad.exit_code == 2 and "invalid key: name" in bad.output


def test_keys_create_grants_permissions_by_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["keys", "create", "analyst", "--permission", "routing.evaluate"])
    assert result.exit_code == 0, result.output
    record_text = result.output.split("restart the service:\n", 1)[1].split("\nthe key", 1)[0]
    config = tmp_path / "service.yaml"
    config.write_text("auth:\n  keys:\n" + "\n".join("    " + line for line in record_text.strip().splitlines()))
    assert [str(p) for p in load_service_config(config).auth.keys[0].permissions] == ["routing.evaluate"]
    unknown = CliRunner().invoke(cli, ["keys", "create", "x", "--permission", "admin"])
    assert unknown.exit_code == 2 and "permissions.0: Input should be 'routing.evaluate'" in unknown.output


# -- over HTTP -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
async def echo_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(echo_pool_spec("gate-auth"))
    await pool.start()
    yield pool
    await pool.shutdown()


class Keys:
    """One key per behaviour under test, made as an operator would."""

    def __init__(self) -> None:
        self.full, self.experts_only, self.limited = new_key(), new_key(), new_key()

    def config(self, **auth: Any) -> ServiceConfig:
        keys = [
            {"name": "full", "hash": hash_key(self.full)},
            {"name": "experts-only", "hash": hash_key(self.experts_only), "models": ["expert/*"], "max_tokens": 16},
            {"name": "limited", "hash": hash_key(self.limited), "requests_per_minute": 2},
        ]
        return ServiceConfig.model_validate({"auth": {"mode": "on", "keys": keys, **auth}})


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def guarded_server(echo_pool: ExpertPool, keys: Keys) -> Iterator[ServerThread]:
    with ServerThread(create_app(orchestrator=Orchestrator(echo_pool), service=keys.config())) as server:
        yield server


def client_for(server: ServerThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_a_request_without_a_key_is_401_and_probes_stay_open(guarded_server: ServerThread) -> None:
    response = httpx.post(guarded_server.url + "/v1/chat/completions", json={"model": "moesaic", "messages": HELLO})
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["code"] == "missing_api_key" and "Authorization: Bearer" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert httpx.get(guarded_server.url + "/v1/models").status_code == 401
    assert httpx.get(guarded_server.url + "/healthz").status_code == 200
    assert httpx.get(guarded_server.url + "/metrics").status_code == 200


def test_an_unknown_key_is_an_authentication_error(guarded_server: ServerThread) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client_for(guarded_server, new_key()).chat.completions.create(model="moesaic", messages=HELLO)
    assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"
    not_bearer = httpx.get(guarded_server.url + "/v1/models", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert not_bearer.status_code == 401


def test_a_key_answers_and_its_name_reaches_the_journal(guarded_server: ServerThread, keys: Keys) -> None:
    reply = client_for(guarded_server, keys.full).chat.completions.create(model="expert/a", messages=HELLO)
    assert reply.choices[0].message.content == "hello there"
    journal = guarded_server.server.config.app.state.service.journal
    assert asyncio.run(journal.latest(1))[0].key_name == "full"


def test_a_model_the_key_may_not_use_is_403(guarded_server: ServerThread, keys: Keys) -> None:
    client = client_for(guarded_server, keys.experts_only)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="moesaic", messages=HELLO)
    body = caught.value.body
    assert caught.value.status_code == 403 and body["code"] == "model_not_allowed" and body["param"] == "model"
    assert "'experts-only' may not use model 'moesaic'" in body["message"] and body["type"] == "permission_error"
    assert client.chat.completions.create(model="expert/b", messages=HELLO).choices[0].message.content
    assert sorted(model.id for model in client.models.list()) == ["expert/a", "expert/b"]  # only what it may use
    routed = httpx.post(
        guarded_server.url + "/v1/route",
        json={"query": "what is 2 + 2?"},
        headers={"Authorization": f"Bearer {keys.experts_only}"},
    )
    assert routed.status_code == 403 and routed.json()["error"]["code"] == "model_not_allowed"


def test_a_keys_max_tokens_caps_each_request(guarded_server: ServerThread, keys: Keys) -> None:
    client = client_for(guarded_server, keys.experts_only)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="expert/a", messages=HELLO, max_tokens=17)
    assert caught.value.body["param"] == "max_tokens" and "'experts-only''s max_tokens (16)" in caught.value.message
    assert client.chat.completions.create(model="expert/a", messages=HELLO, max_tokens=16).choices


def test_over_the_keys_rate_limit_is_429_with_retry_after(guarded_server: ServerThread, keys: Keys) -> None:
    client = client_for(guarded_server, keys.limited)
    for _ in range(2):
        client.chat.completions.create(model="expert/a", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="expert/a", messages=HELLO)
    body = caught.value.body
    assert body["code"] == "rate_limit_exceeded" and body["type"] == "requests"
    assert "2 requests per minute" in body["message"]
    retry_after = caught.value.response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 120  # a sliding window: up to 1.5 minutes here
    assert guarded_server.server.config.app.state.service.rate_limiter.rejected == 1
    other = client_for(guarded_server, keys.full)  # limits are per key
    assert other.chat.completions.create(model="expert/a", messages=HELLO).choices


def test_keys_in_redis_are_accepted_and_revoked_at_once(
    echo_pool: ExpertPool, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    hash_name = f"moesaic:keys:{uuid.uuid4().hex}"
    config_file_keys = keys.config(redis_hash=hash_name, refresh_s=0).auth.model_dump()
    service = ServiceConfig.model_validate({"auth": config_file_keys, "redis": {"url": redis_url}})
    runner = CliRunner()
    with ServerThread(create_app(orchestrator=Orchestrator(echo_pool), service=service)) as server:
        config = tmp_path / "service.yaml"
        config.write_text(f"redis: {{url: '{redis_url}'}}\nauth: {{redis_hash: '{hash_name}'}}\n")
        made = runner.invoke(
            cli, ["keys", "create", "from-redis", "-m", "expert/a", "--redis", redis_url, "--config", str(config)]
        )
        assert made.exit_code == 0, made.output
        key = printed_key(made.output)
        stored = json.loads(redis.Redis.from_url(redis_url).hget(hash_name, "from-redis"))
        assert stored["hash"] == hash_key(key) and key not in json.dumps(stored)
        client = client_for(server, key)
        assert client.chat.completions.create(model="expert/a", messages=HELLO).choices
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="expert/b", messages=HELLO)
        again = runner.invoke(cli, ["keys", "create", "from-redis", "--redis", redis_url, "--config", str(config)])
        assert again.exit_code == 2 and "revoke it first" in again.output
        listed = runner.invoke(cli, ["keys", "list", "--config", str(config)], env={"COLUMNS": "250"})
        assert listed.exit_code == 0 and "from-redis" in listed.output and f"redis {hash_name}" in listed.output
        revoked = runner.invoke(cli, ["keys", "revoke", "from-redis", "--config", str(config)])
        assert revoked.exit_code == 0, revoked.output
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="expert/a", messages=HELLO)
        assert client_for(server, keys.full).chat.completions.create(model="expert/a", messages=HELLO).choices
        missing = runner.invoke(cli, ["keys", "revoke", "from-redis", "--config", str(config)])
        assert missing.exit_code == 1 and "no key named 'from-redis'" in missing.output


def test_auth_off_makes_every_caller_anonymous(echo_pool: ExpertPool) -> None:
    service = ServiceConfig.model_validate({"auth": {"mode": "off"}})
    with ServerThread(create_app(orchestrator=Orchestrator(echo_pool), service=service)) as server:
        assert client_for(server, "anything").chat.completions.create(model="expert/a", messages=HELLO).choices
        journal = server.server.config.app.state.service.journal
        assert asyncio.run(journal.latest(1))[0].key_name == "anonymous"


async def test_an_app_whose_lifespan_did_not_run_fails_closed() -> None:
    from orchestrator.server.settings import ServeSettings

    app = create_app(ServeSettings(host="0.0.0.0"))  # nothing started: no keys to check against
    transport = httpx.ASGITransport(app=app)  # runs no lifespan
    async with httpx.AsyncClient(transport=transport, base_url="http://moesaic") as client:
        response = await client.post("/v1/chat/completions", json={"model": "moesaic", "messages": HELLO})
    assert response.status_code == 503 and response.json()["error"]["code"] == "service_not_started"


def test_the_agent_apis_pass_the_same_admission(guarded_server: ServerThread, keys: Keys) -> None:
    """/v1/messages takes the key as Anthropic's clients send it (x-api-key); both agent APIs apply the key's model
    list and max_tokens cap as the chat API does."""
    import anthropic

    def claude(key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=guarded_server.url, api_key=key, max_retries=0, timeout=30)

    message = claude(keys.full).messages.create(
        model="moesaic", max_tokens=8, messages=[{"role": "user", "content": "hi there"}]
    )
    assert message.content[0].text == "hi there"  # the echo pool, reached with the key in x-api-key
    with pytest.raises(anthropic.AuthenticationError):
        claude("msk-not-a-key").messages.create(
            model="moesaic", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(anthropic.PermissionDeniedError):  # experts-only may not use the pipeline
        claude(keys.experts_only).messages.create(
            model="moesaic", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    responses = client_for(guarded_server, keys.experts_only).responses
    with pytest.raises(openai.PermissionDeniedError):
        responses.create(model="moesaic", input="hi", max_output_tokens=8)
    with pytest.raises(openai.BadRequestError) as capped:  # its max_tokens cap is 16
        responses.create(model="expert/a", input="hi", max_output_tokens=64)
    assert "max_tokens" in str(capped.value)
