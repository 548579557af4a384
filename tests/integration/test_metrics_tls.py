"""``/metrics`` parsed with the Prometheus client's own parser, and HTTPS with a freshly made self-signed cert."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
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
    assert sample(families, "s4_group_commit_commands", "s4_group_commit_commands_total") >= \
        sample(families, "s4_group_commit_batches", "s4_group_commit_batches_total") >= 1
    for name in ("s4_volume_live_bytes", "s4_volume_dead_bytes", "s4_dedup_unique_blobs", "s4_journal_last_seq"):
        assert name in families
    assert SECRET_KEY not in requests.get(server.endpoint + "/metrics", timeout=30).text

    # a signed request to /metrics is S3 (a bucket may be named "metrics")
    with pytest.raises(Exception) as err:  # noqa: B017
        s3.list_objects_v2(Bucket="metrics")
    assert "NoSuchBucket" in str(err.value)


def test_metrics_disabled(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", env={"S4_METRICS_ENABLED": "false"}).start()
    try:
        assert requests.get(proc.endpoint + "/metrics", timeout=30).status_code == 403  # plain S3: anonymous
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
        proc.stop()
