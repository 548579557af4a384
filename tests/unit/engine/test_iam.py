"""IAM in the engine: deciders and their refusals, argon2id hashing, secrets encrypted at rest, replay."""

from __future__ import annotations

import io
import shutil
import stat
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from s4.engine import Engine
from s4.engine.iam import IamError
from s4.tools import journal_cli

pytestmark = pytest.mark.anyio
PASSWORD = "correct-horse-battery"


def _raw_files(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file() and p.name != "iam.key")


def _dump(data_dir: Path, command: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        journal_cli.main([command, "--data-dir", str(data_dir)])
    return out.getvalue()


async def test_create_update_delete_user(engine: Engine) -> None:
    alice = await engine.create_user("alice_1", PASSWORD, "Writer")
    assert alice["username"] == "alice_1" and alice["role"] == "Writer" and alice["active"]
    assert "password_hash" not in alice and alice.get("access_key") is None
    assert engine.get_user(alice["id"])["username"] == "alice_1"
    assert [u["username"] for u in engine.list_users()] == ["alice_1"]

    updated = await engine.update_user(alice["id"], role="Reader", is_active=False)
    assert updated["role"] == "Reader" and updated["active"] is False
    assert updated["epoch"] == alice["epoch"] + 1  # deactivation invalidates tokens
    await engine.delete_user(alice["id"])
    with pytest.raises(IamError) as err:
        engine.get_user(alice["id"])
    assert err.value.status == 404
    assert engine.list_users() == []


@pytest.mark.parametrize(("username", "password", "role", "status"), [
    ("ab", PASSWORD, "Reader", 400), ("x" * 33, PASSWORD, "Reader", 400), ("bad-name", PASSWORD, "Reader", 400),
    ("okname", "short", "Reader", 400), ("okname", PASSWORD, "Admin", 400), ("okname", None, "Reader", 400),
])
async def test_create_user_validation(engine: Engine, username: str, password: str, role: str,
                                      status: int) -> None:
    with pytest.raises(IamError) as err:
        await engine.create_user(username, password, role)
    assert err.value.status == status


async def test_duplicate_and_missing(engine: Engine) -> None:
    await engine.create_user("bob", PASSWORD, "Reader")
    with pytest.raises(IamError) as err:
        await engine.create_user("bob", PASSWORD, "Writer")
    assert err.value.status == 409
    for call in (engine.delete_user("nope"), engine.update_user("nope", role="Reader"),
                 engine.create_credential("nope"), engine.delete_credential("nope")):
        with pytest.raises(IamError) as err:
            await call
        assert err.value.status == 404


async def test_password_hash_is_argon2id(engine: Engine) -> None:
    user = await engine.create_user("carol", PASSWORD, "Reader")
    stored = engine.get_user_by_name("carol")
    assert stored is not None and stored["password_hash"].startswith("$argon2id$")
    assert (await engine.authenticate_password("carol", PASSWORD))["id"] == user["id"]
    assert await engine.authenticate_password("carol", "wrong-password") is None
    assert await engine.authenticate_password("nobody", PASSWORD) is None
    before = engine.get_user(user["id"])["epoch"]
    await engine.update_user(user["id"], password="another-password")
    assert engine.get_user(user["id"])["epoch"] == before + 1
    assert await engine.authenticate_password("carol", PASSWORD) is None
    assert await engine.authenticate_password("carol", "another-password") is not None
    await engine.update_user(user["id"], is_active=False)
    assert await engine.authenticate_password("carol", "another-password") is None


async def test_credentials_lifecycle(engine: Engine) -> None:
    user = await engine.create_user("dave", PASSWORD, "Writer")
    access, secret = await engine.create_credential(user["id"])
    assert access.startswith("S4AK") and len(access) == 20 and access[4:].isalnum() and access[4:].isupper()
    assert len(secret) == 40
    found = engine.secret_for(access)
    assert found is not None and found[0] == secret and found[1]["id"] == user["id"]
    assert engine.get_user(user["id"])["access_key"] == access

    access2, secret2 = await engine.create_credential(user["id"])  # replaces the old pair
    assert engine.secret_for(access) is None and engine.secret_for(access2)[0] == secret2  # type: ignore[index]
    await engine.update_user(user["id"], is_active=False)
    assert engine.secret_for(access2) is None  # inactive users are refused at once
    await engine.update_user(user["id"], is_active=True)
    await engine.delete_credential(user["id"])
    assert engine.secret_for(access2) is None
    assert engine.get_user(user["id"])["access_key"] is None
    with pytest.raises(IamError) as err:
        await engine.delete_credential(user["id"])
    assert err.value.status == 404

    access3, _ = await engine.create_credential(user["id"])
    await engine.delete_user(user["id"])  # deletes its credentials too
    assert engine.secret_for(access3) is None


async def test_secrets_never_in_plain_text(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    engine = make_engine(data_dir)
    user = await engine.create_user("erin", PASSWORD, "Writer")
    access, secret = await engine.create_credential(user["id"])
    engine.close()

    key_file = data_dir / "iam.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    raw = _raw_files(data_dir)
    assert access.encode() in raw  # the access key is not secret; it proves we looked in the right files
    assert secret.encode() not in raw and PASSWORD.encode() not in raw
    for command in ("dump", "export"):
        text = _dump(data_dir, command)
        assert "credential.created" in text and access in text
        assert secret not in text and PASSWORD not in text and "$argon2id$" not in text

    again = make_engine(data_dir)  # the node key survives restarts: the secret still decrypts
    assert again.secret_for(access)[0] == secret  # type: ignore[index]


async def test_views_rebuilt_from_journal(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    engine = make_engine(data_dir)
    user = await engine.create_user("frank", PASSWORD, "Reader")
    access, secret = await engine.create_credential(user["id"])
    await engine.update_user(user["id"], role="Writer")
    engine.close()
    shutil.rmtree(data_dir / "views")
    again = make_engine(data_dir)
    rebuilt = again.get_user(user["id"])
    assert rebuilt["role"] == "Writer" and rebuilt["access_key"] == access
    assert again.secret_for(access)[0] == secret  # type: ignore[index]


def test_reset_root(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    engine = make_engine(data_dir)
    root = engine.reset_root("root", "password12345")
    assert root["role"] == "SuperUser"
    again = engine.reset_root("root", "password12345")
    assert again["epoch"] == root["epoch"]  # nothing changed, no token invalidated
    changed = engine.reset_root("root", "new-password-1")
    assert changed["id"] == root["id"] and changed["epoch"] == root["epoch"] + 1
    assert len(engine.list_users()) == 1
