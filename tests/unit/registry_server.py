"""A Confluent-compatible Schema Registry for tests: a real HTTP server on 127.0.0.1, in a thread.

No real registry can run here (Karapace is not installable from the package
index this project uses, and Confluent's is a JVM service), so this serves the
responses of Confluent's REST API as its documentation records them
(docs.confluent.io, "Schema Registry API Reference"), byte shapes included:

- ``GET /schemas/ids/{id}`` -> ``{"schema": "..."}``, plus ``"schemaType"``
  for non-Avro schemas; unknown -> 404 ``{"error_code": 40403, "message": "Schema not found"}``
- ``GET /subjects/{subject}/versions/latest`` -> ``{"subject", "id", "version", "schema"}``;
  unknown -> 404 ``{"error_code": 40401, "message": "Subject '...' not found."}``
- ``POST /subjects/{subject}/versions`` ``{"schema", "schemaType"?}`` -> ``{"id": N}``,
  the same id for a schema already registered; a schema marked invalid -> 422
  ``{"error_code": 42201, "message": "Invalid schema"}``

``requests`` records every request as ``(method, path)``, so a test can see
what the client asked; ``fail_with`` makes the next answers a given status.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class FakeRegistry:
    """The registry's state and its server; use as a context manager."""

    def __init__(self) -> None:
        self.schemas: dict[int, dict] = {}  # id -> {"schema": ..., "schemaType"?: ...}
        self.subjects: dict[str, list[int]] = {}  # subject -> ids, oldest first
        self.requests: list[tuple[str, str]] = []
        self.fail_with: int | None = None
        self.delay_s = 0.0
        self.on_request = None  # called with each request's Authorization header
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, schema: str, schema_type: str = "AVRO", subject: str | None = None) -> int:
        """Register ``schema`` directly (as another producer would have) and return its id."""
        with self._lock:
            same = [i for i, held in self.schemas.items() if held == _stored(schema, schema_type)]
            if same:
                schema_id = same[0]
            else:
                schema_id = len(self.schemas) + 1
                self.schemas[schema_id] = _stored(schema, schema_type)
            if subject is not None and schema_id not in self.subjects.setdefault(subject, []):
                self.subjects[subject].append(schema_id)
            return schema_id

    def __enter__(self) -> FakeRegistry:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def answer(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        self.requests.append((method, path))
        if self.fail_with is not None:
            return self.fail_with, {"error_code": self.fail_with * 100, "message": "Internal Server Error"}
        parts = [unquote(p) for p in urlsplit(path).path.strip("/").split("/")]
        if method == "GET" and parts[:2] == ["schemas", "ids"] and len(parts) == 3:
            held = self.schemas.get(int(parts[2]))
            if held is None:
                return 404, {"error_code": 40403, "message": "Schema not found"}
            return 200, dict(held)
        if parts[:1] == ["subjects"] and len(parts) >= 3 and parts[2] == "versions":
            subject = parts[1]
            if method == "POST":
                if "INVALID" in body["schema"]:
                    return 422, {"error_code": 42201, "message": "Invalid schema"}
                return 200, {"id": self.add(body["schema"], body.get("schemaType", "AVRO"), subject)}
            if len(parts) == 4 and parts[3] == "latest":
                ids = self.subjects.get(subject)
                if not ids:
                    return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
                held = self.schemas[ids[-1]]
                return 200, {"subject": subject, "id": ids[-1], "version": len(ids), **held}
        return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}


def _stored(schema: str, schema_type: str) -> dict:
    # Confluent leaves the type out for Avro.
    return {"schema": schema} if schema_type == "AVRO" else {"schema": schema, "schemaType": schema_type}


def _handler(registry: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._reply(None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._reply(json.loads(self.rfile.read(length)) if length else {})

        def _reply(self, body: dict | None) -> None:
            if registry.delay_s:
                threading.Event().wait(registry.delay_s)
            if registry.on_request is not None:
                registry.on_request(self.headers.get("Authorization"))
            status, answer = registry.answer(self.command, self.path, body)
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", MEDIA_TYPE)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout tests)

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    return Handler
