"""The daemon's HTTP endpoint: ``/metrics`` for Prometheus and ``/healthz`` for probes.

Plain HTTP with no authentication by default (the usual sidecar setup, scraped over
the pod network). Two opt-in protections for when the endpoint is reachable from
places it should not be:

- TLS: ``tls_cert_file`` + ``tls_key_file`` (PEM). TLS 1.2 minimum.
- HTTP basic auth: ``basic_auth_users`` maps a user name to a password *hash* made
  with :func:`hash_password` (PBKDF2-HMAC-SHA256, stdlib only)::

      python -m monitor.export.metrics_server hash-password      # prompts, prints the hash

  Use basic auth only together with TLS: without it the password crosses the
  network in clear text.

``/healthz`` never requires credentials (kubelet probes carry none) and reveals
nothing but "ok". ``/metrics`` negotiates the OpenMetrics format when the scraper
asks for it (Prometheus does) and gzip when accepted; ``?name[]=...`` restricts
the output to some metric families, as prometheus_client's own server does.

>>> h = hash_password("s3cret", iterations=1000, salt=b"0123456789abcdef")
>>> h.split("$")[:2]
['pbkdf2_sha256', '1000']
>>> verify_password("s3cret", h), verify_password("wrong", h)
(True, False)
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import os
import socket
import ssl
import sys
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder, gzip_accepted

__all__ = [
    "MetricsServer",
    "hash_password",
    "verify_password",
    "start_metrics_server",
]

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000  # OWASP 2023 guidance for PBKDF2-HMAC-SHA256
_MIN_ITERATIONS = 1_000
_REALM = "infersight"


# --------------------------------------------------------------------------- hashing
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """Return ``"pbkdf2_sha256$<iterations>$<b64 salt>$<b64 hash>"`` for ``password``.

    The format is the one Django uses, so existing tooling can produce it too.
    """
    if iterations < _MIN_ITERATIONS:
        raise ValueError(f"iterations must be >= {_MIN_ITERATIONS}")
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[int, bytes, bytes]:
    try:
        scheme, iterations, salt, digest = encoded.split("$")
        if scheme != SCHEME:
            raise ValueError(f"unsupported password hash scheme {scheme!r} (want {SCHEME})")
        n = int(iterations)
        if n < _MIN_ITERATIONS:
            raise ValueError(f"too few iterations ({n})")
        return n, _unb64(salt), _unb64(digest)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"invalid password hash (want {SCHEME}$iterations$salt$hash): {exc}") from None


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string."""
    iterations, salt, expected = _parse_hash(encoded)
    got = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, dklen=len(expected))
    return hmac.compare_digest(got, expected)


class _BasicAuth:
    """Checks ``Authorization: Basic`` headers against user -> hash.

    PBKDF2 at 600k iterations costs ~0.3 s of CPU; a scrape every 15 s must not pay it
    each time. Successful checks are cached, keyed by an HMAC of the credentials under
    a per-process random key (the cache never holds a password or a fast hash of one).
    Unknown users still pay one PBKDF2 run, so timing does not reveal user names.
    """

    _CACHE_SIZE = 64

    def __init__(self, users: Mapping[str, str]):
        if not users:
            raise ValueError("basic_auth_users is empty: pass None to disable basic auth")
        for user, encoded in users.items():
            if not user or ":" in user:
                raise ValueError(f"invalid basic auth user name {user!r}")
            _parse_hash(encoded)  # fail at start-up, not on the first scrape
        self._users = dict(users)
        self._dummy = hash_password("", iterations=_parse_hash(next(iter(users.values())))[0])
        self._key = os.urandom(32)
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        if not header or not header[:6].lower() == "basic ":
            return False
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = raw.partition(":")
        if not sep:
            return False
        token = hmac.new(self._key, raw.encode("utf-8"), hashlib.sha256).digest()
        with self._lock:
            if token in self._ok:
                self._ok.move_to_end(token)
                return True
        encoded = self._users.get(user)
        ok = verify_password(password, encoded if encoded is not None else self._dummy)
        ok = ok and encoded is not None
        if ok:
            with self._lock:
                self._ok[token] = None
                while len(self._ok) > self._CACHE_SIZE:
                    self._ok.popitem(last=False)
        return ok


# --------------------------------------------------------------------------- server
class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds per socket read: a stalled client (or TLS handshake) frees its thread
    server_version = "infersight"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        url = urlsplit(self.path)
        if url.path == "/healthz":
            healthy = self.server.health() if self.server.health is not None else True
            self._send(200 if healthy else 503, b"ok\n" if healthy else b"unhealthy\n", "text/plain; charset=utf-8")
        elif url.path == "/metrics":
            auth = self.server.auth
            if auth is not None and not auth.check(self.headers.get("Authorization")):
                self._send(
                    401,
                    b"unauthorized\n",
                    "text/plain; charset=utf-8",
                    [("WWW-Authenticate", f'Basic realm="{_REALM}", charset="UTF-8"')],
                )
                return
            self._metrics(parse_qs(url.query))
        elif url.path == "/":
            self._send(200, b'<html><body><a href="/metrics">/metrics</a></body></html>\n', "text/html")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _metrics(self, params: dict[str, list[str]]) -> None:
        registry = self.server.registry
        if "name[]" in params:
            registry = registry.restricted_registry(params["name[]"])
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(registry)
        except Exception as exc:  # a broken collector must not kill the endpoint silently
            self.log_error("collecting metrics failed: %r", exc)
            self._send(500, b"collecting metrics failed\n", "text/plain; charset=utf-8")
            return
        headers = []
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            body = gzip.compress(body, compresslevel=5)
            headers.append(("Content-Encoding", "gzip"))
        self._send(200, body, content_type, headers)

    def _send(self, code: int, body: bytes, content_type: str, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers or ():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - scrapes are not news
        pass

    def log_error(self, format: str, *args) -> None:  # noqa: A002
        sys.stderr.write("metrics_server: " + (format % args) + "\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    registry = REGISTRY
    auth: _BasicAuth | None = None
    health: Callable[[], bool] | None = None

    def handle_error(self, request, client_address) -> None:
        # TLS handshake failures, resets by the client, timeouts: not worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running metrics endpoint. ``port`` is the bound port (useful with port 0)."""

    def __init__(self, httpd: _Server, thread: threading.Thread, tls: bool):
        self._httpd = httpd
        self._thread = thread
        self.host, self.port = httpd.server_address[:2]
        self.tls = tls

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def shutdown(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def start_metrics_server(
    registry=REGISTRY,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    basic_auth_users: Mapping[str, str] | None = None,
    health: Callable[[], bool] | None = None,
) -> MetricsServer:
    """Serve ``registry`` on ``host:port`` in a background thread.

    ``port=0`` picks a free port (read it back from ``.port``). TLS is on when both
    ``tls_cert_file`` and ``tls_key_file`` are given; basic auth when
    ``basic_auth_users`` (user -> :func:`hash_password` string) is given. ``health``,
    if given, decides ``/healthz`` (200 when it returns true, 503 otherwise).
    Raises ``ValueError`` on half a TLS configuration or a malformed hash, and
    ``OSError`` if the address cannot be bound.
    """
    if (tls_cert_file is None) != (tls_key_file is None):
        raise ValueError("TLS needs both tls_cert_file and tls_key_file")
    auth = _BasicAuth(basic_auth_users) if basic_auth_users is not None else None

    server_class = _Server6 if ":" in host else _Server
    httpd = server_class((host, port), _Handler)
    try:
        httpd.registry = registry
        httpd.auth = auth
        httpd.health = health
        tls = tls_cert_file is not None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(tls_cert_file, tls_key_file)
            # Handshake lazily in the request thread, not in accept() on the serving thread,
            # so a client that never completes it cannot block other scrapes.
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    except BaseException:
        httpd.server_close()
        raise
    thread = threading.Thread(target=httpd.serve_forever, name="infersight-metrics", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread, tls)


def main(argv: list[str] | None = None) -> int:
    """``python -m monitor.export.metrics_server hash-password [--iterations N]``."""
    import argparse
    import getpass

    parser = argparse.ArgumentParser(prog="python -m monitor.export.metrics_server")
    sub = parser.add_subparsers(dest="cmd", required=True)
    hp = sub.add_parser("hash-password", help="print a hash for basic_auth_users (reads the password from a prompt or stdin)")
    hp.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    print(hash_password(password, iterations=args.iterations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
