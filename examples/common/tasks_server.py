"""The Python side of the examples' HTTP tasks: a stdlib server that verifies each request's
Standard Webhooks signature (401 otherwise) and answers with a route's JSON result."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from triggers_client import InvalidWebhook, verify_signature

Route = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def serve(port: int, routes: dict[str, Route]) -> None:
    secret = os.environ.get("TRIGGERS_WEBHOOK_SECRET")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            route = routes.get(self.path)
            if route is None:
                return self._answer(404, {})
            if secret:
                try:
                    verify_signature(dict(self.headers.items()), body, secret)
                except InvalidWebhook:
                    return self._answer(401, {})
            status, result = route(json.loads(body))
            self._answer(status, result)

        def _answer(self, status: int, result: dict[str, Any]) -> None:
            payload = json.dumps(result).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
