"""The benchmark's load generator: requests arrive intact, statuses and failures are counted, loopback only."""
from __future__ import annotations

import socket
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scripts.loadgen import form_request, run_load


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the generator expects
    received: list[tuple[str, dict[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
        parts = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True) for part in message.iter_parts()}
        self.received.append((self.path, parts))
        status = 200 if self.path == "/ok" else 422
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_requests_arrive_as_encoded_and_statuses_are_counted(recorder):
    photo = b"\xff\xd8 not really a jpeg \xff\xd9"
    ok = form_request("/ok", data={"txt": "oak dining chair"}, files={"img": ("chair.jpg", photo, "image/jpeg")})
    bad = form_request("/bad", data={"txt": "x"}, files={"img": ("x.jpg", b"x", "image/jpeg")})

    result = run_load(recorder, lambda i: ok if i % 3 else bad, requests=12, concurrency=3)

    assert result.requests == 12 and result.errors == 0
    assert result.statuses == {200: 8, 422: 4}
    assert len(result.latencies_ms) == 12 and result.percentile(50) > 0
    assert ("/ok", {"txt": b"oak dining chair", "img": photo}) in _Recorder.received
    assert result.summary()["client_cpu_ms_per_request"] >= 0


def test_a_refused_connection_is_an_error_not_a_crash():
    with socket.socket() as sock:  # a port nothing listens on once the socket closes
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    result = run_load(f"http://127.0.0.1:{closed}", lambda i: form_request("/ok", data={"txt": "x"}), requests=3, concurrency=1)
    assert result.requests == 0 and result.errors == 3


@pytest.mark.parametrize("url", ["http://example.com", "https://127.0.0.1:8008", "http://10.0.0.1:8008"])
def test_load_is_only_sent_to_loopback(url):
    with pytest.raises(ValueError, match="loopback"):
        run_load(url, lambda i: form_request("/ok"), requests=1, concurrency=1)


def test_percentiles_and_throughput_are_of_the_answered_requests():
    """p50/p95/p99 are percentiles of the latencies, and requests per second count answers, not
    connections that failed."""
    from scripts.loadgen import LoadResult

    result = LoadResult(concurrency=2, requests=100, wall_s=10.0, latencies_ms=[float(i) for i in range(1, 101)], statuses={200: 100}, errors=20, client_cpu_s=0.1)
    summary = result.summary()
    assert (summary["p50_ms"], summary["p95_ms"], summary["p99_ms"]) == (50.5, 95.0, 99.0)
    assert summary["throughput_rps"] == 10.0 and summary["errors"] == 20
