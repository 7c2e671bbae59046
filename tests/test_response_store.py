"""The conversations ``/v1/responses`` continues: kept in Redis with its TTL (any replica reads them) or in process,
scoped to the API key that made them, and bounded like a request body."""

from __future__ import annotations

import pytest
import redis

from orchestrator.server.api.responses_api import ResponsesRequest, _conversation, _stored_id
from orchestrator.server.errors import APIError
from orchestrator.server.service.redis_link import connect_redis
from orchestrator.server.service.response_store import ResponseStore

TURN = [{"type": "message", "role": "user", "content": "hi"}, {"type": "function_call", "call_id": "c", "name": "f"}]


async def test_a_conversation_is_kept_in_redis_with_its_ttl(redis_url: str) -> None:
    link = await connect_redis(redis_url)
    try:
        store = ResponseStore(link, ttl_s=120, namespace="test-responses")
        await store.put("alice:resp_1", TURN)
        assert await ResponseStore(link, ttl_s=120, namespace="test-responses").get("alice:resp_1") == TURN  # shared
        ttl = redis.Redis.from_url(redis_url).ttl("test-responses:response:alice:resp_1")
        assert 0 < ttl <= 120
        assert await store.get("alice:resp_missing") is None
    finally:
        await link.close()


async def test_without_redis_it_is_kept_in_process_and_expires() -> None:
    now = [0.0]
    store = ResponseStore(None, ttl_s=10, clock=lambda: now[0])
    await store.put("alice:resp_1", TURN)
    assert await store.get("alice:resp_1") == TURN
    now[0] = 11.0
    assert await store.get("alice:resp_1") is None


async def test_only_the_key_that_made_an_answer_continues_it_and_a_conversation_is_bounded() -> None:
    store = ResponseStore(None, ttl_s=60)
    await store.put(_stored_id("alice", "resp_1"), TURN)
    follow_up = ResponsesRequest(model="moesaic", input="and then?", previous_response_id="resp_1")
    items = await _conversation(follow_up, store, "alice", 4 * 1024 * 1024)
    assert items == [*TURN, {"type": "message", "role": "user", "content": "and then?"}]
    with pytest.raises(APIError) as other_key:
        await _conversation(follow_up, store, "mallory", 4 * 1024 * 1024)
    assert other_key.value.status == 400 and other_key.value.code == "previous_response_not_found"
    with pytest.raises(APIError) as too_long:
        await _conversation(follow_up, store, "alice", 64)
    assert too_long.value.code == "conversation_too_long" and "limits.max_body_bytes" in too_long.value.message
