"""A real s4-server with its web console on a free port, and a signed-in plain HTTP client of that console."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import requests
from helpers.admin_api import ROOT_PASSWORD
from helpers.server import ServerProcess, free_port

CSRF_META = re.compile(r'data-csrf="([^"]+)"')
SIGNIN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_server(data_dir: Path, *, iam: bool = True, workers: int = 1, **env: str) -> tuple[ServerProcess, str]:
    """(server, console URL): IAM on (root / ROOT_PASSWORD) unless told."""
    port = free_port()
    extra = {"S4_CONSOLE_BIND": f"127.0.0.1:{port}", "S4_WORKERS": str(workers), **env}
    if iam:
        extra["S4_ROOT_PASSWORD"] = ROOT_PASSWORD
    return ServerProcess(data_dir, env=extra).start(), f"http://127.0.0.1:{port}"


@dataclass
class Signed:
    """A requests session holding a console session cookie, and that session's CSRF token."""

    http: requests.Session
    csrf: str
    url: str

    def post(self, path: str, data: dict[str, str] | None = None, **kw: object) -> requests.Response:
        return self.http.post(self.url + path, data={"csrf_token": self.csrf, **(data or {})},
                              allow_redirects=False, timeout=60, **kw)  # type: ignore[arg-type]

    def get(self, path: str, **kw: object) -> requests.Response:
        return self.http.get(self.url + path, allow_redirects=False, timeout=60, **kw)  # type: ignore[arg-type]


def sign_in(url: str, username: str = "root", password: str = ROOT_PASSWORD) -> Signed:
    http = requests.Session()
    form = http.get(url + "/login", timeout=60)
    token = SIGNIN_TOKEN.search(form.text)
    assert token, form.text
    done = http.post(url + "/login", data={"csrf_token": token.group(1), "username": username,
                                           "password": password}, allow_redirects=False, timeout=60)
    assert done.status_code == 303, done.text
    page = http.get(url + "/buckets", timeout=60)
    csrf = CSRF_META.search(page.text)
    assert csrf, page.text
    return Signed(http, csrf.group(1), url)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (cert, key), for a console served over TLS."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "console-cert.pem", directory / "console-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
