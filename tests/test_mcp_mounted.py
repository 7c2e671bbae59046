"""MCP on the API app (``/mcp``): the same pool as ``/v1``, behind the same API keys, driven by the MCP client.

The app is the one ``moesaic serve`` builds, with the MCP endpoint as its plugin, over the session's echo pool;
auth is on, so ``/mcp`` needs a key like ``/v1/*`` does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from experts.config._pool_spec import parse_pool
from experts.runtime._pool import ExpertPool
from orchestrator.frameworks.mcp_endpoint import McpEndpoint
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.auth import hash_key, new_key
from orchestrator.server.service.service_config import ServiceConfig
from tests.conftest import ServerThread
from tests.test_mcp import ECHO_POOL, _exercise

pytestmark = pytest.mark.ray
KEY = new_key()
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}


@pytest.fixture(scope="module")
async def pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(parse_pool(ECHO_POOL, "<mcp echo pool>"))
    await pool.start()
    yield pool
    await pool.shutdown()


@pytest.fixture(scope="module")
def mounted(pool: ExpertPool) -> Iterator[ServerThread]:
    service = ServiceConfig.model_validate({"auth": {"mode": "on", "keys": [{"name": "k", "hash": hash_key(KEY)}]}})
    app = create_app(orchestrator=Orchestrator(pool), service=service, plugins=[McpEndpoint("127.0.0.1")])
    with ServerThread(app) as server:
        yield server


async def test_the_tools_answer_on_the_apps_pool_with_a_key(mounted: ServerThread) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    headers = {"Authorization": f"Bearer {KEY}"}
    async with streamablehttp_client(mounted.url + "/mcp", headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            await _exercise(session)


def test_without_a_key_mcp_is_refused_like_the_api(mounted: ServerThread) -> None:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    refused = httpx.post(mounted.url + "/mcp", content=json.dumps(INITIALIZE), headers=headers)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
    wrong = httpx.post(
        mounted.url + "/mcp", content=json.dumps(INITIALIZE), headers={**headers, "Authorization": "Bearer sk-x"}
    )
    assert wrong.status_code == 401
    foreign = httpx.post(
        mounted.url + "/mcp",
        content=json.dumps(INITIALIZE),
        headers={**headers, "Authorization": f"Bearer {KEY}", "host": "evil.example:80"},
    )
    assert foreign.status_code == 421  # a loopback bind answers local pages only (DNS rebinding)
