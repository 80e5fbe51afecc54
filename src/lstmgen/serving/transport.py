"""The HTTP plumbing under the app: a limit on request bodies, noticing a client that leaves, and
the newline-delimited JSON that /generate/stream sends."""

import json
from typing import Any, Callable


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with a 413, declared or streamed."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        from fastapi import HTTPException
        from fastapi.responses import JSONResponse

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body over {self.max_bytes} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await JSONResponse({"detail": too_large}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body declares no length: count it as it comes
                    raise HTTPException(status_code=413, detail=too_large)
            return message

        await self.app(scope, counted_receive, send)


async def client_leaves(request: Any) -> None:
    """Return once the client of ``request`` (whose body has been read) has closed its connection."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def ndjson_line(item: dict) -> str:
    return json.dumps(item, ensure_ascii=False) + "\n"


def merge_text(items: list[dict]) -> list[dict]:
    """One text event per row for the pieces that piled up (rows are independent, so only the order
    within a row matters), then the closing event if there is one."""
    texts: dict[int, str] = {}
    closing = []
    for item in items:
        if item["event"] == "text":
            texts[item["row"]] = texts.get(item["row"], "") + item["text"]
        else:
            closing.append(item)
    return [{"event": "text", "row": row, "text": text} for row, text in texts.items()] + closing
