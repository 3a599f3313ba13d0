"""The ``bus`` command's side of the management API, against a server that is not a hub (what a
wrong ``--hub`` reaches: a proxy's page, another service): said, never a traceback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bus.app.api_client import ApiClient, ApiRefused

ANSWERS = {
    "/api/v1/html": (200, "text/html", b"<html><body>Sign in</body></html>"),
    "/api/v1/list-error": (500, "application/json", b'["not", "a", "problem"]'),
    "/api/v1/problem": (409, "application/problem+json", b'{"detail": "a redelivery to erp is under way"}'),
    "/api/v1/fine": (200, "application/json", b'{"subscribers": []}'),
}


class _NotAHub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server calls it by this name
        status, kind, body = ANSWERS[self.path]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NotAHub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_answers_that_are_not_the_apis_are_said(server: str) -> None:
    api = ApiClient(server, "t0ken")
    assert api.get("/fine") == {"subscribers": []}
    with pytest.raises(ApiRefused, match="answered 200 with text/html, not JSON: is that a hub's ops port"):
        api.get("/html")  # a JSONDecodeError traceback
    with pytest.raises(ApiRefused, match=r'500 \["not", "a", "problem"\]'):
        api.get("/list-error")  # an AttributeError traceback
    with pytest.raises(ApiRefused, match="409 a redelivery to erp is under way"):
        api.get("/problem")
    with pytest.raises(ApiRefused, match="InvalidURL"):
        ApiClient("http://[::", "t0ken").get("/fine")  # a traceback
