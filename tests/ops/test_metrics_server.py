"""Unit tests of monitor.export.metrics_server: plain HTTP, basic auth, TLS, OpenMetrics, gzip."""

from __future__ import annotations

import base64
import gzip
import http.client
import shutil
import ssl
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.export.metrics_server import hash_password, start_metrics_server, verify_password

FAST = 1_000  # PBKDF2 iterations in tests; production default is 600k


@pytest.fixture
def registry():
    reg = CollectorRegistry()
    Counter("infersight_records", "Records accepted", ["model"], registry=reg).labels("m1").inc(3)
    Gauge("infersight_kafka_connected", "Broker connection", registry=reg).set(1)
    return reg


def get(server, path="/metrics", headers=None, context=None):
    if server.tls:
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl CLI is needed to make a test certificate (apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def test_plain_http_serves_metrics_and_health(registry):
    with start_metrics_server(registry, "127.0.0.1", 0) as srv:
        assert srv.port > 0 and not srv.tls
        status, headers, body = get(srv)
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b'infersight_records_total{model="m1"} 3.0' in body
        assert get(srv, "/healthz")[:1] == (200,)
        assert get(srv, "/nope")[0] == 404


def test_openmetrics_negotiation_gzip_and_name_filter(registry):
    with start_metrics_server(registry, "127.0.0.1", 0) as srv:
        status, headers, body = get(srv, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")
        status, headers, body = get(srv, headers={"Accept-Encoding": "gzip"})
        assert headers.get("Content-Encoding") == "gzip"
        assert b"infersight_kafka_connected 1.0" in gzip.decompress(body)
        body = get(srv, "/metrics?name[]=infersight_kafka_connected")[2]
        assert b"infersight_kafka_connected" in body and b"infersight_records_total" not in body


def test_health_callback_controls_healthz(registry):
    healthy = [True]
    with start_metrics_server(registry, "127.0.0.1", 0, health=lambda: healthy[0]) as srv:
        assert get(srv, "/healthz")[0] == 200
        healthy[0] = False
        assert get(srv, "/healthz")[0] == 503


def test_basic_auth_rejects_missing_and_wrong_credentials(registry):
    users = {"prometheus": hash_password("correct horse", iterations=FAST)}
    with start_metrics_server(registry, "127.0.0.1", 0, basic_auth_users=users) as srv:
        status, headers, body = get(srv)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
        assert b"infersight" not in body
        assert get(srv, headers=basic("prometheus", "wrong"))[0] == 401
        assert get(srv, headers=basic("mallory", "correct horse"))[0] == 401
        assert get(srv, headers={"Authorization": "Basic !!notbase64"})[0] == 401
        assert get(srv, headers={"Authorization": "Bearer abc"})[0] == 401
        status, _, body = get(srv, headers=basic("prometheus", "correct horse"))
        assert status == 200 and b"infersight_records_total" in body
        # cached path gives the same answer; a wrong password is still refused afterwards
        assert get(srv, headers=basic("prometheus", "correct horse"))[0] == 200
        assert get(srv, headers=basic("prometheus", "correct horsE"))[0] == 401
        # probes need no credentials
        assert get(srv, "/healthz")[0] == 200


def test_tls_serves_and_plain_http_is_refused(registry, tls_cert):
    cert, key = tls_cert
    with start_metrics_server(registry, "127.0.0.1", 0, tls_cert_file=str(cert), tls_key_file=str(key)) as srv:
        assert srv.tls and srv.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        status, _, body = get(srv, context=ctx)
        assert status == 200 and b"infersight_records_total" in body
        # an unverified client is refused by the client-side check, proving a real cert is served
        with pytest.raises(ssl.SSLCertVerificationError):
            get(srv, context=ssl.create_default_context())
        # plain HTTP to the TLS port gets no metrics
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            assert b"infersight" not in resp.read()
            raise ConnectionError("refused as expected")
        conn.close()
        # the server survived the bad client
        assert get(srv, context=ctx)[0] == 200


def test_tls_with_basic_auth(registry, tls_cert):
    cert, key = tls_cert
    users = {"prom": hash_password("pw", iterations=FAST)}
    with start_metrics_server(registry, "127.0.0.1", 0, tls_cert_file=str(cert), tls_key_file=str(key),
                              basic_auth_users=users) as srv:
        ctx = ssl.create_default_context(cafile=str(cert))
        assert get(srv, context=ctx)[0] == 401
        assert get(srv, context=ctx, headers=basic("prom", "pw"))[0] == 200


def test_configuration_errors_fail_at_start(registry, tls_cert):
    with pytest.raises(ValueError, match="both"):
        start_metrics_server(registry, "127.0.0.1", 0, tls_cert_file=str(tls_cert[0]))
    with pytest.raises(ValueError, match="invalid password hash"):
        start_metrics_server(registry, "127.0.0.1", 0, basic_auth_users={"u": "plaintext"})
    with pytest.raises(ValueError):
        start_metrics_server(registry, "127.0.0.1", 0, basic_auth_users={})


def test_shutdown_releases_port(registry):
    srv = start_metrics_server(registry, "127.0.0.1", 0)
    port = srv.port
    srv.shutdown()
    srv.shutdown()  # idempotent
    again = start_metrics_server(registry, "127.0.0.1", port)
    assert again.port == port
    again.shutdown()


def test_hash_format_and_verify():
    h = hash_password("pw", iterations=FAST)
    scheme, iterations, salt, digest = h.split("$")
    assert (scheme, iterations) == ("pbkdf2_sha256", str(FAST))
    assert verify_password("pw", h) and not verify_password("pW", h)
    assert hash_password("pw", iterations=FAST) != h  # random salt
    with pytest.raises(ValueError):
        hash_password("pw", iterations=10)


def test_hash_password_cli_reads_stdin():
    out = subprocess.run([sys.executable, "-m", "monitor.export.metrics_server", "hash-password", "--iterations", "1000"],
                         input="hunter2\n", capture_output=True, text=True, check=True,
                         cwd=__import__("pathlib").Path(__file__).resolve().parents[2]).stdout.strip()
    assert verify_password("hunter2", out)


@pytest.mark.prometheus
def test_real_prometheus_scrapes_over_tls_with_basic_auth(registry, tls_cert, tmp_path):
    """The Prometheus side of docs/alerting.md works: scheme https + tls_config.ca_file +
    basic_auth.password_file -> target up and samples stored; a wrong password -> 401."""
    from opskit import run_prometheus, wait_for

    cert, key = tls_cert
    users = {"prometheus": hash_password("scrape-secret", iterations=FAST)}
    (tmp_path / "pw").write_text("scrape-secret\n")
    (tmp_path / "badpw").write_text("nope\n")
    with start_metrics_server(registry, "127.0.0.1", 0, tls_cert_file=str(cert), tls_key_file=str(key),
                              basic_auth_users=users) as srv:
        target = f"127.0.0.1:{srv.port}"
        tls = {"scheme": "https", "tls_config": {"ca_file": str(cert)}}
        with run_prometheus(tmp_path / "prom-good", [target], job_extra={
                **tls, "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "pw")}}) as prom:
            wait_for(prom.targets_up, 30, what="the TLS + basic auth target to be up")
            assert prom.query('infersight_records_total{model="m1"}')[0]["value"][1] == "3"
        with run_prometheus(tmp_path / "prom-bad", [target], job_extra={
                **tls, "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "badpw")}}) as prom:
            def down_with_401():
                active = prom.api("targets")["activeTargets"]
                return active and active[0]["health"] == "down" and "401" in active[0]["lastError"]
            wait_for(down_with_401, 30, what="the wrong password to be refused")
