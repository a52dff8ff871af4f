"""Real HTTP servers on 127.0.0.1 speaking the OpenAI and Gemini APIs, with fault modes.

Started by the tests (``with FakeLLM() as srv: srv.openai_url ...``). Both APIs are
served by one ThreadingHTTPServer:

- ``POST /v1/chat/completions`` and ``POST /v1/embeddings`` (OpenAI-compatible)
- ``POST /v1beta/models/<model>:generateContent`` and ``:batchEmbedContents`` (Gemini)

Faults are scripted per cluster: ``srv.faults['cl_1'] = ['429', 'ok']`` makes the
first request whose prompt is about cluster cl_1 get a 429, the next one an
answer. The cluster is read from the prompt ("Cluster cl_1 has ..."); requests
without one use the key ``'*'``; embeddings requests use ``'embeddings'``.
Actions: ok, 429, 500, 503, 401, slow (sleeps ``slow_seconds`` then answers),
malformed (text that is not JSON), offshape (JSON without the asked keys),
badenum (an enum value outside the shape), fenced (JSON inside a Markdown
fence), notjson_body (an HTTP 200 whose body is not JSON); and servers that echo the
API key they were sent: echo_malformed (inside text that is not JSON), echo_label
(inside a valid answer: label, summary, keywords and an extra field), echo_error
(inside an HTTP 400 error message).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

_NODE_RE = re.compile(r"Cluster (\S+) has")
_KW_RE = re.compile(r"Keywords[^:]*: (.+)")


def hashed_embedding(text: str, dim: int = 64) -> list[float]:
    """Deterministic bag-of-words embedding: similar word sets, similar vectors."""
    v = np.zeros(dim)
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        h = int(hashlib.sha256(w.encode()).hexdigest(), 16)
        v[h % dim] += 1.0 if (h >> 8) % 2 else -1.0
    n = np.linalg.norm(v)
    return (v / n if n else v).round(6).tolist()


class FakeLLM:
    """Scriptable OpenAI + Gemini server. Records every request (path, headers, body)."""

    def __init__(self, api_key: str | None = None, slow_seconds: float = 1.0):
        self.api_key = api_key
        self.slow_seconds = slow_seconds
        self.faults: dict[str, list[str]] = {}
        self.labels: dict[str, dict] = {}
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> FakeLLM:
        owner = self

        class Handler(_Handler):
            srv = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    @property
    def gemini_url(self) -> str:
        return self.url + "/v1beta"

    # -- behaviour --------------------------------------------------------------------
    def next_action(self, key: str) -> str:
        with self._lock:
            queue = self.faults.get(key) or []
            return queue.pop(0) if queue else "ok"

    def chat_requests(self, node: str | None = None) -> list[dict]:
        out = [r for r in self.requests if r["kind"] == "chat"]
        return [r for r in out if r["node"] == node] if node else out

    def answer(self, node: str, prompt: str) -> dict:
        if node in self.labels:
            return dict(self.labels[node])
        m = _KW_RE.search(prompt)
        kws = [k.strip() for k in m.group(1).split(",")][:4] if m else ["misc"]
        return {"label": f"About {kws[0]}", "summary": f"Documents about {', '.join(kws)}.",
                "keywords": kws, "sentiment": "neutral", "target_audience": "engineers"}


class _Handler(BaseHTTPRequestHandler):
    srv: FakeLLM
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, payload, headers: dict | None = None, raw: bytes | None = None):
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._send(400, {"error": {"message": "bad json"}})
        path = self.path
        gemini = path.startswith("/v1beta/")
        if path.endswith("/chat/completions") or path.endswith(":generateContent"):
            kind = "chat"
            prompt = _prompt_text(body, gemini)
            m = _NODE_RE.search(prompt)
            node = m.group(1) if m else "*"
        elif path.endswith("/embeddings") or path.endswith(":batchEmbedContents"):
            kind, prompt, node = "embeddings", "", "embeddings"
        else:
            return self._send(404, {"error": {"message": f"no route {path}"}})
        srv = self.srv
        with srv._lock:
            srv.requests.append({"kind": kind, "path": path, "node": node, "body": body,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}, "prompt": prompt,
                                 "t": time.monotonic()})
        given = (self.headers.get("x-goog-api-key") if gemini
                 else (self.headers.get("authorization") or "").removeprefix("Bearer "))
        if srv.api_key is not None and given != srv.api_key:
            return self._send(401, {"error": {"message": "invalid api key"}})
        action = srv.next_action(node)
        if action == "echo_error":
            return self._send(400, {"error": {"message": f"key {given} is not allowed here"}})
        if action == "slow":
            time.sleep(srv.slow_seconds)
            action = "ok"
        if action in ("429", "500", "503", "401"):
            return self._send(int(action), {"error": {"message": f"fault {action}"}},
                              {"retry-after": "0"} if action == "429" else None)
        if action == "notjson_body":
            return self._send(200, None, raw=b"<html>gateway</html>")
        if kind == "embeddings":
            texts = ([r["content"]["parts"][0]["text"] for r in body["requests"]] if gemini
                     else body["input"])
            vecs = [hashed_embedding(t) for t in texts]
            if gemini:
                return self._send(200, {"embeddings": [{"values": v} for v in vecs]})
            return self._send(200, {"object": "list", "model": body.get("model"), "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vecs)]})
        answer = srv.answer(node, prompt)
        if action == "malformed":
            text = '{"label": "broken, "keywords": [oops'
        elif action == "offshape":
            text = json.dumps({"name": "no label key here"})
        elif action == "badenum":
            text = json.dumps({**answer, "sentiment": "ecstatic"})
        elif action == "fenced":
            text = "```json\n" + json.dumps(answer) + "\n```"
        elif action == "echo_malformed":
            text = f'{{"label": "your key is {given}, "keywords": [oops'
        elif action == "echo_label":
            text = json.dumps({**answer, "label": f"About {given}",
                               "summary": f"Documents sent with key {given}.",
                               "keywords": [given, "misc"], "sentiment": "neutral",
                               "target_audience": given})
        else:
            text = json.dumps(answer)
        if gemini:
            return self._send(200, {"candidates": [{"content": {"role": "model", "parts": [
                {"text": text}]}, "finishReason": "STOP"}]})
        return self._send(200, {"id": "chatcmpl-test", "object": "chat.completion",
                                "model": body.get("model"), "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text},
             "finish_reason": "stop"}]})


def _prompt_text(body: dict, gemini: bool) -> str:
    if gemini:
        parts = [p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", [])]
        return "\n".join(parts)
    out = []
    for msg in body.get("messages", []):
        if msg.get("role") != "user":
            continue
        c = msg.get("content")
        if isinstance(c, str):
            out.append(c)
        else:
            out.extend(p.get("text", "") for p in c if p.get("type") == "text")
    return "\n".join(out)
