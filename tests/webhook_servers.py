"""Real HTTP webhook receivers on 127.0.0.1 for the webhook tests.

``with Receiver(secret="s", script=["500", "ok"]) as rx: rx.url`` serves POSTs on
a free port. Each request takes the next action of ``script`` (the last one
repeats): ``ok`` (200), a status code like ``"500"`` / ``"400"`` / ``"429"``
(with ``Retry-After: 0``), or ``slow:<seconds>`` (sleeps, then 200). Every
request is recorded with its raw body, headers, whether its signature verified
with ``secret`` (checked independently of duckcluster's code) and its action.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, secret: str | None = None, script: list[str] | None = None):
        self.secret = secret
        self.script = list(script or ["ok"])
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def _next_action(self) -> str:
        with self._lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def __enter__(self) -> "Receiver":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                action = owner._next_action()
                sig = self.headers.get("X-Duckcluster-Signature")
                expected = None
                if owner.secret is not None:
                    expected = "sha256=" + hmac.new(owner.secret.encode(), raw,
                                                    hashlib.sha256).hexdigest()
                with owner._lock:
                    owner.requests.append({
                        "path": self.path, "raw": raw, "json": json.loads(raw),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "verified": expected is not None and sig is not None
                        and hmac.compare_digest(expected, sig),
                        "action": action, "at": time.monotonic()})
                if action.startswith("slow:"):
                    time.sleep(float(action.split(":", 1)[1]))
                    action = "ok"
                status = 200 if action == "ok" else int(action)
                body = b'{"ok": true}' if status == 200 else b'{"error": "scripted"}'
                try:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.02)
        raise AssertionError(f"expected {n} requests, got {len(self.requests)}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
