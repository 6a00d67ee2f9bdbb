"""A loopback EC2 instance metadata service with IMDSv2 semantics, for tests.

`imds_server()` serves on 127.0.0.1 (random port) in a thread:

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1–21600) → a token;
- every GET needs a valid ``X-aws-ec2-metadata-token`` header, else 401;
- meta-data: instance-id, instance-type, placement/region, placement/availability-zone;
  spot/instance-action and events/recommendations/rebalance answer 404 until a test sets them
  (`FakeImds.interrupt`, `FakeImds.recommend_rebalance`);
- `FakeImds.expire_tokens` invalidates every token (the next GET is 401), `fail_with` makes
  every request answer that HTTP status (an unhealthy service).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_PATH = "/latest/api/token"


@dataclass
class FakeImds:
    """The state a test sees and sets; ``url`` is the base URL of the server."""

    url: str = ""
    instance_id: str = "i-0123456789abcdef0"
    instance_type: str = "m5.large"
    region: str = "us-east-1"
    #: every request as (method, path, headers); header names are lower case (HTTP ignores case)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    #: answer every request with this status instead (None: behave)
    fail_with: int | None = None
    tokens: set[str] = field(default_factory=set)
    instance_action: str | None = None
    rebalance: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def interrupt(self, action: str = "terminate", time: str = "2030-01-01T00:02:00Z") -> None:
        """From now on spot/instance-action answers this notice."""
        self.instance_action = json.dumps({"action": action, "time": time})

    def recommend_rebalance(self, notice_time: str = "2030-01-01T00:00:00Z") -> None:
        """From now on events/recommendations/rebalance answers a recommendation."""
        self.rebalance = json.dumps({"noticeTime": notice_time})

    def expire_tokens(self) -> None:
        """Invalidate every token handed out so far."""
        with self.lock:
            self.tokens.clear()

    def count(self, method: str, path: str) -> int:
        """How many requests had this method and path."""
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and p == path)

    def metadata(self, path: str) -> str | None:
        prefix = "/latest/meta-data/"
        if not path.startswith(prefix):
            return None
        return {
            "instance-id": self.instance_id,
            "instance-type": self.instance_type,
            "placement/region": self.region,
            "placement/availability-zone": self.region + "a",
            "spot/instance-action": self.instance_action,
            "events/recommendations/rebalance": self.rebalance,
        }.get(path[len(prefix) :])


def _handler(fake: FakeImds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

        def _record(self) -> bool:
            with fake.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append((self.command, self.path, headers))
            if fake.fail_with is not None:
                self._answer(fake.fail_with, "unhealthy")
                return False
            return True

        def _answer(self, status: int, body: str = "") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            if not self._record():
                return
            if self.path != TOKEN_PATH:
                self._answer(404 if self.path.startswith("/latest/") else 405)
                return
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                self._answer(400, "missing or invalid X-aws-ec2-metadata-token-ttl-seconds")
                return
            token = secrets.token_urlsafe(24)
            with fake.lock:
                fake.tokens.add(token)
            self._answer(200, token)

        def do_GET(self) -> None:
            if not self._record():
                return
            token = self.headers.get("X-aws-ec2-metadata-token")
            with fake.lock:
                valid = token is not None and token in fake.tokens
            if not valid:
                self._answer(401)
                return
            value = fake.metadata(self.path)
            if value is None:
                self._answer(404, "Not Found")
            else:
                self._answer(200, value)

    return Handler


@contextmanager
def imds_server() -> Iterator[FakeImds]:
    """A fake metadata service on 127.0.0.1 for the ``with`` block."""
    fake = FakeImds()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    fake.url = f"http://{host!s}:{port}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="fake-imds", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
