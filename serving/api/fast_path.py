"""A pure-ASGI fast path for the predict endpoints: the common request skips FastAPI's routing.

On a tabular model the framework costs more than the prediction: Starlette's
routing, FastAPI's dependency solver, its request and response objects and two
exception middlewares took ~45 us of a ~75 us single-row ``/predict`` served in
process, and twice that share of the server's CPU under load
(``python -m bench.serving``). :class:`PredictFastPath` sits just inside the
body-size limit and the metrics middleware and answers a ``POST`` to a predict
path itself when the request is the plain case -- a declared
``Content-Length``, ``Content-Type: application/json`` or none, a model
loaded, a body the model answers -- with the bytes the route would send
(:mod:`serving.api.predict` builds them for both).

INVARIANT: the fast path never answers anything but a 200, and it answers it
only where the route would have answered the same 200. Any other request --
another content type, a chunked body, no model yet, a body that fails
validation, rows the model cannot answer -- goes to the FastAPI route with its
body replayed, and the route answers as it always did: every 4xx and 5xx keeps
its text, status and headers, because the route makes it. Counters move only
for a request the fast path answers (``on_unknown`` is deferred until then),
so a request handed on is counted once, by the route.

Examples
--------
>>> import asyncio
>>> async def route(scope, receive, send):  # the app it falls back to
...     await send({"type": "http.response.start", "status": 503, "headers": []})
...     await send({"type": "http.response.body", "body": b"from the route"})
>>> def fail(raw, on_unknown, request_id):
...     raise ValueError("not the plain case")
>>> fast = PredictFastPath(route, {"/predict": lambda raw, on_unknown, request_id: b'{"ok":1}'}, routes={})
>>> def call(app, path):
...     sent = []
...     async def receive():
...         return {"type": "http.request", "body": b"{}", "more_body": False}
...     async def send(message):
...         sent.append(message)
...     scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", b"2")]}
...     asyncio.run(app(scope, receive, send))
...     return sent[0]["status"], sent[1]["body"]
>>> call(fast, "/predict")
(200, b'{"ok":1}')
>>> call(PredictFastPath(route, {"/predict": fail}, routes={}), "/predict")
(503, b'from the route')
>>> call(fast, "/models")
(503, b'from the route')
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.predict import UnknownFields

__all__ = ["Answer", "PredictFastPath"]

#: ``(body bytes, on_unknown, X-Request-Id header or None) -> answer bytes``; raises for anything but a 200.
Answer = Callable[[bytes, UnknownFields, "str | None"], bytes]

_JSON_HEADERS = (b"content-type", b"application/json")


class PredictFastPath:
    """Answer the plain case of ``answers``' paths in pure ASGI; hand everything else to ``app``.

    Parameters
    ----------
    app
        The ASGI app behind (FastAPI's exception middleware and router).
    answers
        Path -> the function that answers a body there (raises for anything but a 200).
    routes
        Path -> its route object, put in ``scope["route"]`` as the router would
        (the metrics middleware labels requests by the route's template).
    on_unknown
        Where unknown named fields are counted, once a request is answered here.
    """

    def __init__(
        self,
        app: ASGIApp,
        answers: Mapping[str, Answer],
        *,
        routes: Mapping[str, Any],
        on_unknown: UnknownFields | None = None,
    ) -> None:
        self.app = app
        self.answers = answers
        self.routes = routes
        self.on_unknown = on_unknown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self.answers.get(scope["path"]) if scope["type"] == "http" else None
        plain, request_id = _plain_json(scope["headers"]) if answer is not None else (False, None)
        if not plain or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages, body = await _read_body(receive)
        if body is not None:
            unknown: list[Mapping[str, int]] = []
            try:
                payload = answer(body, unknown.append, request_id)
            except Exception:  # noqa: BLE001 -- the route answers it, with its own status and text
                payload = None
            if payload is not None:
                if unknown and self.on_unknown is not None:
                    for counts in unknown:
                        self.on_unknown(counts)
                route = self.routes.get(scope["path"])
                if route is not None:
                    scope["route"] = route
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", str(len(payload)).encode()), _JSON_HEADERS],
                    }
                )
                await send({"type": "http.response.body", "body": payload})
                return
        await self.app(scope, _replay(messages, receive), send)


def _plain_json(headers: list[tuple[bytes, bytes]]) -> tuple[bool, str | None]:
    """Whether the request declares a ``Content-Length`` and a ``Content-Type`` of exactly
    ``application/json`` (or none); and its ``X-Request-Id``, decoded as Starlette does (latin-1)."""
    length = False
    request_id = None
    for name, value in headers:
        if name == b"content-length":
            length = True
        elif name == b"content-type" and value != b"application/json":
            return False, None
        elif name == b"x-request-id" and request_id is None:  # the first, as Starlette reads it
            request_id = value.decode("latin-1")
    return length, request_id


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The messages received and the whole body (``None`` if the client went away first)."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        if not message.get("more_body", False):
            break
    if len(messages) == 1:
        return messages, messages[0].get("body", b"")
    return messages, b"".join(m.get("body", b"") for m in messages)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` again, then whatever ``receive`` gives."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
