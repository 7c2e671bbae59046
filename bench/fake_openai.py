"""A tiny OpenAI-compatible endpoint that answers chat completions at once: the common upstream for bench/load.py.

Both the LiteLLM proxy (the baseline) and Moesaic's ``litellm`` backend route to it, so the
time it takes is the same for both and what each adds on top can be compared. It repeats the
last user message (at most ``max_tokens`` words) and counts words as tokens. Benchmarks only.

    .venv/bin/python bench/fake_openai.py --port 8101
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def create_fake() -> FastAPI:
    app = FastAPI(title="fake OpenAI endpoint (benchmarks only)")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        messages = body.get("messages") or []
        last_user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        words = str(last_user).split()
        kept = words[: int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)]
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(kept)},
                        "finish_reason": "length" if len(words) > len(kept) else "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(kept),
                    "total_tokens": prompt_tokens + len(kept),
                },
            }
        )

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "bench"}]}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_fake(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
