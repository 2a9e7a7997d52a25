"""A request-body size limit, enforced before any handler parses a byte of the body.

:class:`BodySizeLimitMiddleware` is pure ASGI (no BaseHTTPMiddleware task, no
copy of the body). A request that declares a ``Content-Length`` over the
limit is answered ``413`` at once, without reading its body. A request
without one (``Transfer-Encoding: chunked``) is counted as it streams in, and
the read that crosses the limit fails with ``413``: the body is never
buffered past the limit, whatever the client sends.

Examples
--------
>>> from fastapi import FastAPI, Request
>>> from fastapi.testclient import TestClient
>>> inner = FastAPI()
>>> @inner.post("/echo")
... async def echo(request: Request) -> dict:
...     return {"bytes": len(await request.body())}
>>> inner.add_middleware(BodySizeLimitMiddleware, max_body_bytes=8)
>>> client = TestClient(inner)
>>> client.post("/echo", content=b"12345678").json()
{'bytes': 8}
>>> too_big = client.post("/echo", content=b"123456789")
>>> too_big.status_code, too_big.json()["detail"][:45]
(413, 'the request body (9 bytes) is larger than the')
>>> client.post("/echo", content=iter([b"12345", b"6789"])).status_code  # chunked, no Content-Length
413
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimitMiddleware", "BodyTooLargeError"]

_HINT = "send less (split a batch) or raise STREAMLEARN_SERVING_MAX_BODY_BYTES"


class BodyTooLargeError(HTTPException):
    """A request body grew past the configured limit while it was being received.

    An ``HTTPException`` on purpose: FastAPI turns any other exception raised
    while it reads a body into a 400, but re-raises this one, so its 413
    reaches the client whichever handler was reading.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            detail=f"the request body is larger than the limit of {limit} bytes; {_HINT}",
            headers={"Connection": "close"},
        )


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed one; counting covers us if it did not
    return None


async def _send_413(send: Send, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    # Connection: close -- the unread rest of the body is still on the socket,
    # so the connection cannot carry another request.
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimitMiddleware:
    """Answer 413 to a request whose body is larger than ``max_body_bytes``.

    Parameters
    ----------
    app
        The ASGI app to protect.
    max_body_bytes
        The largest body accepted, in bytes (``STREAMLEARN_SERVING_MAX_BODY_BYTES``).
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _declared_length(scope)
        if declared is not None:
            if declared > limit:
                await _send_413(
                    send,
                    f"the request body ({declared} bytes) is larger than the limit of {limit} bytes; {_HINT}",
                )
                return
            # INVARIANT: the HTTP server never hands the app more than the
            # declared Content-Length, so the hot path pays no per-chunk wrapper.
            await self.app(scope, receive, send)
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError as exc:
            # Reached here only where nothing turned it into a response (a
            # handler that reads the raw stream outside FastAPI's body parsing).
            if started:
                raise
            await _send_413(send, exc.detail)
