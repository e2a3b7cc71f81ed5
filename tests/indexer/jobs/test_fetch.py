"""URL fetching against a real loopback HTTP server: retries, caps, timeouts, concurrency, SSRF guard.

The server is on loopback, which the default policy refuses to fetch from; every test but
the guard's own allows private networks explicitly (``LOCAL``).
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from indexer import fetch
from indexer.fetch import FetchError, FetchPolicy, fetch_all, is_public


class _Server:
    """Routes: /redirect?to=<url>, /ok/<n>, /missing, /flaky (503 twice, then OK), /big, /big-streamed, /slow, /hold."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with server.lock:
                    server.hits[self.path] = server.hits.get(self.path, 0) + 1
                    hits = server.hits[self.path]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                self.counted = True
                try:
                    self.route(hits)
                finally:
                    self.leave()

            def leave(self):
                # A request stops being in flight when its response goes out: the client may
                # start its next request before this handler thread returns.
                if self.counted:
                    self.counted = False
                    with server.lock:
                        server.in_flight -= 1

            def send(self, status, body=b"", headers=()):
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                if not any(key == "Transfer-Encoding" for key, _ in headers):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def route(self, hits):
                if self.path.startswith("/redirect?to="):
                    self.send(302, headers=[("Location", self.path.split("=", 1)[1])])
                elif self.path.startswith("/ok/"):
                    self.send(200, f"body-{self.path[4:]}".encode())
                elif self.path == "/missing":
                    self.send(404, b"nope")
                elif self.path == "/flaky":
                    if hits <= 2:
                        self.send(503, b"busy")
                    else:
                        self.send(200, b"finally")
                elif self.path == "/big":
                    self.send(200, b"x" * 5000)
                elif self.path == "/big-streamed":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for _ in range(10):
                        self.wfile.write(b"3e8\r\n" + b"y" * 1000 + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                elif self.path == "/slow":
                    time.sleep(1.0)
                    self.send(200, b"late")
                elif self.path.startswith("/hold/"):
                    time.sleep(0.2)  # long enough for the other requests to overlap
                    self.leave()
                    self.send(200, b"held")
                else:
                    self.send(500)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    server = _Server()
    yield server
    server.close()


LOCAL = dict(allow_private_networks=True)
FAST = FetchPolicy(timeout_s=0.4, retries=2, backoff_s=0.01, max_bytes=4096, concurrency=4, **LOCAL)


def test_each_url_gets_its_body_or_its_reason(server):
    urls = [f"{server.base}/ok/1", f"{server.base}/missing", f"{server.base}/ok/2", "ftp://example.invalid/x"]
    out = fetch_all(urls, FAST)
    assert out[0] == b"body-1" and out[2] == b"body-2"
    assert isinstance(out[1], FetchError) and out[1].reason == "HTTP 404"
    assert isinstance(out[3], FetchError) and "not an absolute http(s) URL" in out[3].reason
    assert server.hits["/missing"] == 1  # a 404 is final: not retried


def test_transient_failures_are_retried(server):
    (body,) = fetch_all([f"{server.base}/flaky"], FAST)
    assert body == b"finally" and server.hits["/flaky"] == 3
    server.hits.clear()
    (error,) = fetch_all([f"{server.base}/flaky"], FetchPolicy(retries=1, backoff_s=0.01, **LOCAL))
    assert isinstance(error, FetchError) and error.reason == "HTTP 503 (after 2 attempts)"


def test_size_cap_with_and_without_content_length(server):
    declared, streamed = fetch_all([f"{server.base}/big", f"{server.base}/big-streamed"], FAST)
    assert isinstance(declared, FetchError) and "exceeds the cap of 4096 bytes" in declared.reason
    assert isinstance(streamed, FetchError) and "exceeds the cap of 4096 bytes" in streamed.reason


def test_timeout_is_reported_after_retries(server):
    (error,) = fetch_all([f"{server.base}/slow"], FetchPolicy(timeout_s=0.2, retries=1, backoff_s=0.01, **LOCAL))
    assert isinstance(error, FetchError) and error.reason.startswith("timed out after 0.2s")
    assert server.hits["/slow"] == 2


def test_unreachable_host_is_an_item_failure():
    import socket

    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (error,) = fetch_all([f"http://127.0.0.1:{port}/x.png"], FetchPolicy(retries=0, timeout_s=1, **LOCAL))
    assert isinstance(error, FetchError) and error.reason.startswith("connection failed")


def test_requests_run_concurrently_up_to_the_limit(server):
    urls = [f"{server.base}/hold/{i}" for i in range(8)]
    out = fetch_all(urls, FetchPolicy(concurrency=3, timeout_s=5, **LOCAL))
    assert out == [b"held"] * 8
    assert 2 <= server.max_in_flight <= 3


def test_policy_validation():
    with pytest.raises(ValueError):
        FetchPolicy(timeout_s=0)
    with pytest.raises(ValueError):
        FetchPolicy(concurrency=0)


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("::1", False), ("fe80::1%eth0", False), ("fd00::1", False), ("::ffff:127.0.0.1", False),
    ("::ffff:8.8.8.8", True),
])
def test_only_globally_routable_addresses_count_as_public(address, public):
    assert is_public(address) is public


def test_private_addresses_are_refused_by_default_and_never_contacted(server):
    port = server.base.rsplit(":", 1)[1]
    urls = [f"{server.base}/ok/1", f"http://localhost:{port}/ok/2", f"http://[::ffff:127.0.0.1]:{port}/ok/3"]
    out = fetch_all(urls, FetchPolicy(retries=2, backoff_s=0.01))
    for error in out:
        assert isinstance(error, FetchError) and "non-public address" in error.reason, error
        assert "attempts" not in error.reason  # final at once, not retried
    assert server.hits == {}


def test_every_redirect_hop_is_checked(server, monkeypatch):
    # 127.0.0.1 stands in for a public host and 127.0.0.2 (also this machine) for a private one
    monkeypatch.setattr(fetch, "is_public", lambda address: address == "127.0.0.1")
    port = server.base.rsplit(":", 1)[1]
    allowed, redirected = fetch_all([f"{server.base}/ok/1", f"{server.base}/redirect?to=http://127.0.0.2:{port}/ok/2"],
                                    FetchPolicy(retries=0))
    assert allowed == b"body-1"
    assert isinstance(redirected, FetchError) and "127.0.0.2 resolves to a non-public address" in redirected.reason
    assert "/ok/2" not in server.hits  # the redirect target was never contacted


# Hosts that do not resolve, or that no resolver or URL parser accepts, in every form a
# hostile manifest tried (issue #16, defect 1): each is that URL's failure, never the batch's.
UNUSUAL_URLS = [
    "http://nonexistent-host.invalid/x.png",       # NXDOMAIN
    "http://localhost./x.png",                     # trailing dot (loopback where it resolves)
    "http://a..b/x.png",                           # empty label
    "http://" + "a" * 70 + ".example/x.png",       # label over 63 characters
    "http://0177.0.0.1/x.png",                     # octal IPv4
    "http://[fe80::1%25eth0]/x.png",               # IPv6 zone id
    "http://example.com:abc/x.png",                # non-numeric port
    "http://[::1/x.png",                           # unclosed IPv6 bracket
]


def test_unresolvable_and_malformed_hosts_fail_their_url_and_never_the_batch(server):
    urls = [f"{server.base}/ok/1", *UNUSUAL_URLS, f"{server.base}/ok/2"]
    out = fetch_all(urls, FetchPolicy(retries=1, backoff_s=0.01, timeout_s=5, **LOCAL))
    assert out[0] == b"body-1" and out[-1] == b"body-2"
    for url, error in zip(UNUSUAL_URLS, out[1:-1], strict=True):
        assert isinstance(error, FetchError), (url, error)
        assert error.reason and "Traceback" not in error.reason, url
    reasons = dict(zip(UNUSUAL_URLS, (e.reason for e in out[1:-1]), strict=True))
    assert "does not resolve" in reasons["http://nonexistent-host.invalid/x.png"]
    assert "Invalid IPv4 address" in reasons["http://0177.0.0.1/x.png"]
    assert "zone id" in reasons["http://[fe80::1%25eth0]/x.png"]
    assert "attempts" not in reasons["http://nonexistent-host.invalid/x.png"]  # no such name: final at once


def test_the_private_address_refusal_names_the_flag_that_lifts_it(server):
    port = server.base.rsplit(":", 1)[1]
    (error,) = fetch_all([f"http://localhost:{port}/ok/1"], FetchPolicy(retries=0))
    assert "--allow-private-urls" in error.reason and "PROLIP_ALLOW_PRIVATE_URLS" in error.reason
