"""Calls to a test server's admin JSON API (/api/admin/...): one helper for every test that logs in and runs jobs."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from helpers.server import ServerProcess

#: The root password the tests that use the admin API start their servers with (S4_ROOT_PASSWORD).
ROOT_PASSWORD = "password12345"
#: The JWT signing secret they use (S4_JWT_SECRET): any fixed value of the required length.
JWT_SECRET = "tests-jwt-secret-0123456789abcdef0123"


def iam_server(data_dir: Path, **env: str) -> ServerProcess:
    """A started server with IAM on (root password and JWT secret set), for tests of users, accounts and grants."""
    return ServerProcess(data_dir, env={"S4_ROOT_PASSWORD": ROOT_PASSWORD, "S4_JWT_SECRET": JWT_SECRET, **env}).start()


def admin_call(srv: ServerProcess, method: str, path: str, token: str | None = None, body: Any = None,
               timeout_s: float = 120) -> Any:
    """The decoded JSON answer; urllib's HTTPError for a status of 400 or more."""
    req = urllib.request.Request(srv.endpoint + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def root_token(srv: ServerProcess, password: str = ROOT_PASSWORD) -> str:
    """A SuperUser bearer token for the root user."""
    return str(admin_call(srv, "POST", "/api/admin/login", body={"username": "root", "password": password})["token"])
