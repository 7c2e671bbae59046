"""``n`` > 1: several independent answers to one request, as one response with ``n`` choices.

Each choice is a whole run of its own (the pipeline, or one expert), with seed ``seed + i`` when the request has a
seed, so sampled choices differ; the runs go concurrently and a failed one cancels the rest. The response's
``usage`` and ``moesaic.cost`` are the sums over every run (each run really processed the prompt);
``moesaic.choices[i]`` is run i's own metadata. A stream interleaves the runs' chunks, each choice under its
``index``; every run's last chunk carries its metadata, and one chunk at the end the totals.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from orchestrator.server.api.chat_render import usage_body
from orchestrator.server.api.schemas import ChatCompletionRequest, StreamOptions

T = TypeVar("T")


def samples(body: ChatCompletionRequest) -> list[ChatCompletionRequest]:
    """The ``n`` single-choice requests; streamed ones always report usage, summed here at the end."""
    runs = []
    for i in range(body.n):
        update: dict[str, Any] = {"n": 1, "seed": None if body.seed is None else body.seed + i}
        if body.stream:
            update["stream_options"] = StreamOptions(include_usage=True)
        runs.append(body.model_copy(update=update))
    return runs


async def all_or_none(runs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run every coroutine concurrently; the first failure cancels the others and is raised as it is."""
    tasks = [asyncio.ensure_future(run()) for run in runs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def merged_completion(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``chat.completion`` with each body's choice at its index, usage and cost summed."""
    merged = {key: value for key, value in bodies[0].items() if key not in ("choices", "usage", "moesaic")}
    merged["choices"] = [{**body["choices"][0], "index": i} for i, body in enumerate(bodies)]
    merged["usage"] = _summed_usage([body["usage"] for body in bodies])
    merged["moesaic"] = _totals([body.get("moesaic") or {} for body in bodies])
    return merged


async def merged_chunks(
    streams: list[AsyncIterator[dict[str, Any]]], include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    """The runs' chunks interleaved as they come, each choice re-indexed; an error chunk ends the whole stream."""
    queue: asyncio.Queue[tuple[int, dict[str, Any] | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[dict[str, Any]]) -> None:
        try:
            async for chunk in stream:
                await queue.put((index, chunk))
        finally:
            await queue.put((index, None))

    pumps = [asyncio.create_task(pump(i, stream)) for i, stream in enumerate(streams)]
    usages: list[dict[str, Any]] = []
    metadata: dict[int, dict[str, Any]] = {}
    last: dict[str, Any] = {}
    try:
        running = len(streams)
        while running:
            index, chunk = await queue.get()
            if chunk is None:
                running -= 1
                continue
            if "error" in chunk:
                yield chunk
                return
            if chunk.get("usage") and not chunk.get("choices"):
                usages.append(chunk["usage"])
                continue
            chunk = {**chunk, "choices": [{**choice, "index": index} for choice in chunk.get("choices", [])]}
            if "moesaic" in chunk:
                metadata[index] = chunk["moesaic"]
            last = chunk
            yield chunk
        totals = {**last, "choices": [], "moesaic": _totals([metadata.get(i, {}) for i in range(len(streams))])}
        if include_usage:
            totals["usage"] = _summed_usage(usages)
        yield totals
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]  # async generators: closing cancels their work


def _summed_usage(usages: list[dict[str, Any]]) -> dict[str, int]:
    prompt = sum(int(usage.get("prompt_tokens", 0)) for usage in usages)
    completion = sum(int(usage.get("completion_tokens", 0)) for usage in usages)
    return usage_body(prompt, completion)


def _totals(metadata: list[dict[str, Any]]) -> dict[str, Any]:
    cost = sum(float(item.get("cost") or 0.0) for item in metadata)
    return {"n": len(metadata), "cost": cost, "choices": metadata}
