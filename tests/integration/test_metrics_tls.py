"""``/metrics`` parsed with the Prometheus client's own parser, and HTTPS with a freshly made self-signed cert."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from helpers.server import ACCESS_KEY, SECRET_KEY, ServerProcess
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def scrape(endpoint: str, **kwargs: Any) -> dict[str, Any]:
    resp = requests.get(endpoint + "/metrics", timeout=30, **kwargs)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(resp.text)}


def sample(families: dict[str, Any], name: str, sample_name: str | None = None, **labels: str) -> float:
    total = 0.0
    for s in families[name].samples:
        if s.name == (sample_name or name) and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def test_metrics(server: ServerProcess, s3: Any) -> None:
    bucket = f"metrics-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 1000)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x" * 1000
    with pytest.raises(Exception):  # noqa: B017 - any client error; we count the 404 below
        s3.get_object(Bucket=bucket, Key="missing")

    families = scrape(server.endpoint)
    assert sample(families, "s4_requests", "s4_requests_total", operation="PutObject", status="200") >= 1
    assert sample(families, "s4_requests", "s4_requests_total", operation="GetObject", status="404") >= 1
    assert sample(families, "s4_request_duration_seconds", "s4_request_duration_seconds_count",
                  operation="GetObject") >= 2
    assert sample(families, "s4_bytes_received", "s4_bytes_received_total") >= 1000
    assert sample(families, "s4_bytes_sent", "s4_bytes_sent_total") >= 1000
    assert sample(families, "s4_buckets") >= 1 and sample(families, "s4_objects") >= 1
    for name in ("s4_volume_live_bytes", "s4_volume_dead_bytes", "s4_dedup_unique_blobs", "s4_journal_last_seq"):
        assert name in families
    assert SECRET_KEY not in requests.get(server.endpoint + "/metrics", timeout=30).text

    # a signed request to /metrics is S3 (a bucket may be named "metrics")
    with pytest.raises(Exception) as err:  # noqa: B017
        s3.list_objects_v2(Bucket="metrics")
    assert "NoSuchBucket" in str(err.value)


METRICS_CHILD = """
import asyncio, sys, time
from pathlib import Path
from types import SimpleNamespace
from s4.api import metrics as m
from s4.engine import Engine, EngineOptions

role, data, directory = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if role == "worker":  # serves requests; its engine has no journal (the sequencer is remote)
    worker = m.Metrics(SimpleNamespace(journal=None))  # type: ignore[arg-type]
    assert worker.multiprocess and worker.journal_metrics is None
    for status in (200, 200, 404):
        worker.observe("PutObject", status, time.perf_counter(), 100, 0)
    sys.exit(0)
engine = Engine(EngineOptions(data_dir=data))
try:
    if role == "supervisor":  # owns the journal; learned the directory after importing prometheus_client
        m.enable_multiprocess(directory)
        published = m.JournalMetrics(engine)
        for i in range(3):
            asyncio.run(engine.create_bucket(f"mp-bucket-{i}"))  # one batch and one fsync each
        published.close()
    else:
        sys.stdout.write(m.Metrics(engine).render()[0].decode())
finally:
    engine.close()
"""


def test_metrics_aggregate_across_processes(tmp_path: Path) -> None:
    """The S4_WORKERS layout: HTTP workers write request metrics and the supervisor its journal metrics into
    PROMETHEUS_MULTIPROC_DIR; a scrape in any process sums them all, and exports each family once."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("S4_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    with_dir = {**base, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}

    def child(role: str, env: dict[str, str]) -> str:
        done = subprocess.run([sys.executable, "-c", METRICS_CHILD, role, str(tmp_path / "data"), str(multiproc)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    child("worker", with_dir)
    child("worker", with_dir)
    child("supervisor", base)
    text = child("scraper", with_dir)
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names)), "a family is exported twice"
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert sample(families, "s4_requests", "s4_requests_total", operation="PutObject", status="200") == 4
    assert sample(families, "s4_requests", "s4_requests_total", operation="PutObject", status="404") == 2
    assert sample(families, "s4_request_duration_seconds", "s4_request_duration_seconds_count",
                  operation="PutObject") == 6
    assert sample(families, "s4_bytes_received", "s4_bytes_received_total") == 600
    assert sample(families, "s4_journal_fsync_seconds", "s4_journal_fsync_seconds_count") == 3
    assert sample(families, "s4_journal_fsync_seconds", "s4_journal_fsync_seconds_bucket", le="+Inf") == 3
    assert sample(families, "s4_group_commit_batch_size", "s4_group_commit_batch_size_count") == 3
    assert sample(families, "s4_group_commit_batch_size", "s4_group_commit_batch_size_bucket", le="1.0") == 3
    assert sample(families, "s4_group_commit_batches", "s4_group_commit_batches_total") == 3
    assert sample(families, "s4_group_commit_commands", "s4_group_commit_commands_total") == 3
    # engine gauges come from the views, in whichever process scrapes
    assert sample(families, "s4_buckets") == 3 and sample(families, "s4_journal_last_seq") == 3


@pytest.mark.parametrize("workers", ["1", "2"])
def test_journal_metrics(tmp_path: Path, workers: str) -> None:
    """Journal fsync latency and group-commit batch sizes from a real server, with one process or several
    (where requests land on different workers and the counters must still add up)."""
    proc = ServerProcess(tmp_path / "data", env={"S4_WORKERS": workers}).start()
    try:
        s3 = boto3.client("s3", endpoint_url=proc.endpoint, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
        s3.create_bucket(Bucket="journaled")
        for i in range(10):
            s3.put_object(Bucket="journaled", Key=f"k{i}", Body=b"x" * 100)
        families = scrape(proc.endpoint)
        assert sample(families, "s4_requests", "s4_requests_total", operation="PutObject", status="200") == 10
        assert sample(families, "s4_objects") == 10
        fsyncs = sample(families, "s4_journal_fsync_seconds", "s4_journal_fsync_seconds_count")
        assert fsyncs >= 11 and sample(families, "s4_journal_fsync_seconds", "s4_journal_fsync_seconds_sum") > 0
        assert sample(families, "s4_journal_fsync_seconds", "s4_journal_fsync_seconds_bucket", le="+Inf") == fsyncs
        batches = sample(families, "s4_group_commit_batch_size", "s4_group_commit_batch_size_count")
        assert batches == sample(families, "s4_group_commit_batches", "s4_group_commit_batches_total") >= 11
        assert sample(families, "s4_group_commit_batch_size", "s4_group_commit_batch_size_sum") == \
            sample(families, "s4_group_commit_commands", "s4_group_commit_commands_total") >= 11
        assert sample(families, "s4_group_commit_batch_size", "s4_group_commit_batch_size_bucket", le="1.0") >= 1
    finally:
        proc.stop()


def test_multiprocess_dir_set_too_late(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """prometheus_client picks its value store at import: a directory set afterwards must fail loudly."""
    from s4.api.metrics import multiprocess_enabled

    assert multiprocess_enabled() is False
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        multiprocess_enabled()


def test_metrics_disabled(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", env={"S4_METRICS_ENABLED": "false"}).start()
    try:
        # plain S3: an anonymous ListObjects of a bucket named "metrics", which does not exist (S3 tells anyone
        # NoSuchBucket for a missing bucket, issue 21's access control)
        resp = requests.get(proc.endpoint + "/metrics", timeout=30)
        assert resp.status_code == 404 and b"<Code>NoSuchBucket</Code>" in resp.content, resp.text
    finally:
        proc.stop()


def make_cert(directory: Path, kind: str) -> tuple[Path, Path]:
    key: Any = {"rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
                "ecdsa": lambda: ec.generate_private_key(ec.SECP256R1()),
                "ed25519": ed25519.Ed25519PrivateKey.generate}[kind]()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, None if kind == "ed25519" else hashes.SHA256()))
    cert_path, key_path = directory / f"{kind}-cert.pem", directory / f"{kind}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp("tls")
    cert, key = make_cert(root, "rsa")
    proc = ServerProcess(root / "data", env={"S4_TLS_CERT": str(cert), "S4_TLS_KEY": str(key),
                                             "S4_ROOT_PASSWORD": "password12345"}).start()
    yield proc, cert
    proc.stop()


def test_tls_boto3(tls_server: tuple[ServerProcess, Path]) -> None:
    proc, cert = tls_server
    assert proc.endpoint.startswith("https://")
    bucket = f"tls-{uuid.uuid4().hex[:8]}"
    for verify in (False, str(cert)):
        s3 = boto3.client("s3", endpoint_url=proc.endpoint, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1", verify=verify)
        key = f"obj-{verify is False}"
        if verify is False:
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=key, Body=b"over tls")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"over tls"
    with pytest.raises(requests.exceptions.SSLError):  # not trusted without the CA bundle
        requests.get(proc.endpoint + "/health", timeout=30)
    # the README's admin curl flow over https (curl -k)
    token = requests.post(proc.endpoint + "/api/admin/login", json={"username": "root", "password": "password12345"},
                          verify=str(cert), timeout=30).json()["token"]
    users = requests.get(proc.endpoint + "/api/admin/users", headers={"Authorization": f"Bearer {token}"},
                         verify=str(cert), timeout=30)
    assert users.status_code == 200 and users.json()["users"][0]["username"] == "root"
    assert "s4_requests" in scrape(proc.endpoint, verify=str(cert))


@pytest.mark.skipif(shutil.which("aws") is None, reason="the aws CLI is not installed")
def test_tls_aws_cli(tls_server: tuple[ServerProcess, Path], tmp_path: Path) -> None:
    proc, _ = tls_server
    (tmp_path / "file.txt").write_text("hello over tls\n")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), PYTHONWARNINGS="ignore")
    bucket = f"cli-{uuid.uuid4().hex[:8]}"
    for args in (["s3", "mb", f"s3://{bucket}"], ["s3", "cp", "file.txt", f"s3://{bucket}/file.txt"],
                 ["s3", "ls", f"s3://{bucket}"]):
        done = subprocess.run(["aws", "--endpoint-url", proc.endpoint, "--no-verify-ssl", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert "file.txt" in done.stdout


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519"])
def test_tls_other_key_types(tmp_path: Path, kind: str) -> None:
    cert, key = make_cert(tmp_path, kind)
    proc = ServerProcess(tmp_path / "data", env={"S4_TLS_CERT": str(cert), "S4_TLS_KEY": str(key)}).start()
    try:
        resp = requests.get(proc.endpoint + "/health", verify=False, timeout=30)
        assert resp.status_code == 200
    finally:
        code = proc.stop()
    # A graceful exit, not the harness's SIGKILL after 30 s: the TLS close of the harness's idle pooled connection
    # waited for a close_notify that never came (api/http_protocol.py, TLS_CLOSE_GRACE_S).
    assert code == 0, proc.log()[-2000:]
