"""Engine-side IAM operations (a mixin of ``Engine``): users, passwords, S3 credentials, the SigV4 secret lookup.

Hashing (argon2id) and secret generation/encryption happen here, off the sequencer thread and before the command
is submitted, so the deciders in iam.py only ever see hashes and ciphertext. Reads go straight to the views.
"""

from __future__ import annotations

import logging
import secrets
import string
from pathlib import Path
from typing import Any

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from . import accounts, user_names
from .errors import ErrorCode, S3Error
from .iam import IamError, check_role, check_username
from .keyring import Keyring, KeyringError, load_or_create_key
from .login_throttle import LoginThrottle
from .sequencer import Command
from .views import keys
from .views.env import unpack
from .views.records import Tx

log = logging.getLogger(__name__)
UNUSABLE_KEY_MESSAGE = ("The AWS access key ID you provided cannot be used on this server: its stored secret "
                        "cannot be decrypted with this node's key.")
ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits
SECRET_ALPHABET = string.ascii_letters + string.digits
MIN_PASSWORD, MAX_PASSWORD = 8, 1024


def check_password(password: Any) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise IamError(400, f"password must be a string of {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    return password


def public_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A user view record without its password hash (what the API layer formats)."""
    return {k: v for k, v in rec.items() if k != "password_hash"}


class IamOps:
    """Mixed into Engine; relies on its ``_run``, ``_read``, ``sequencer`` and ``views``."""

    sequencer: Any
    _run: Any
    _read: Any
    names: Any  # a pool's name register (engine/ports.py BucketNamesPort), None in single mode

    def _init_iam(self, data_dir: Path, remote: Any = None, shared_key: bytes | None = None) -> None:
        own = load_or_create_key(data_dir)
        self.keyring = Keyring(shared_key, own) if shared_key else Keyring(own)
        self._hasher = PasswordHasher()  # argon2id with the library's recommended cost
        self._dummy_hash = ""  # made on first use: a hash to verify against when the username is unknown
        self._secret_cache: dict[str, tuple[str, str]] = {}  # access key -> (ciphertext, plain secret)
        self._undecryptable: dict[str, str] = {}  # access key -> the ciphertext logged as undecryptable
        self.login_throttle = LoginThrottle()  # in a worker process the node's one lives in the sequencer process
        self._remote_iam = remote

    async def throttle_login(self, action: str, username: str, client: str) -> None:
        """``attempt`` (raises ThrottledError while locked out, else counts the attempt as failed) before the
        password is verified; ``succeeded`` after it verified."""
        if action not in LoginThrottle.ACTIONS:
            raise ValueError(f"unknown throttle action {action!r}")
        if self._remote_iam is not None:
            await self._remote_iam.throttle(action, username, client)
        else:
            getattr(self.login_throttle, action)(username, client)

    async def _iam(self, name: str, args: dict[str, Any], actor: str) -> Any:
        result = await self._run(name, args, actor)
        if isinstance(result, IamError):
            raise result
        return result

    async def _hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password)

    # -- users ----------------------------------------------------------------------------------------------------
    async def create_user(self, username: str, password: str, role: str, actor: str = "", *,
                          account: str | None = None, email: str | None = None) -> dict[str, Any]:
        """``account``: the account's name (created with its first user; None: the default account);
        ``email``: the address ACL grants may name the account by (engine/accounts.py)."""
        check_username(username)
        check_role(role)
        try:
            account = accounts.check_account_name(account) if account is not None else None
            email = accounts.check_email(email) if email is not None else None
        except ValueError as exc:
            raise IamError(400, str(exc)) from None
        password_hash = await self._hash(check_password(password))
        args = {"username": username, "role": role, "password_hash": password_hash}
        if account and account != accounts.DEFAULT_ACCOUNT_NAME:
            args["account"] = account
        if email:
            args["email"] = email
        if self.names is None:
            rec = await self._iam("iam_create_user", args, actor)
        else:  # a pool: the name register makes the username unique across it (engine/user_names.py)
            rec = await user_names.create_user(self.names, self._run, self._user_deleted, args, actor)
            if isinstance(rec, IamError):
                raise rec
        return public_record(rec)

    async def update_user(self, user_id: str, *, password: str | None = None, role: str | None = None,
                          is_active: bool | None = None, actor: str = "") -> dict[str, Any]:
        if role is not None:
            check_role(role)
        if is_active is not None and not isinstance(is_active, bool):
            raise IamError(400, "is_active must be true or false")
        password_hash = await self._hash(check_password(password)) if password is not None else None
        rec = await self._iam("iam_update_user", {"user_id": user_id, "role": role, "active": is_active,
                                                  "password_hash": password_hash}, actor)
        return public_record(rec)

    async def delete_user(self, user_id: str, actor: str = "") -> None:
        if self.names is None:
            await self._iam("iam_delete_user", {"user_id": user_id}, actor)
            return
        record = self._read(lambda tx: tx.user(user_id))
        result = await user_names.delete_user(self.names, self._run, record, user_id, actor)
        if isinstance(result, IamError):
            raise result

    def _user_deleted(self, user_id: str) -> bool:
        """This node has applied the deletion of that user id (final: the id never comes back)."""
        return bool(self._read(lambda tx: (tx.packed("user_clocks", keys.text_key(user_id)) or {}).get("d")))

    def get_user(self, user_id: str) -> dict[str, Any]:
        rec = self._read(lambda tx: tx.user(user_id))
        if rec is None:
            raise IamError(404, "user not found")
        return public_record(rec)

    def get_user_by_name(self, username: str) -> dict[str, Any] | None:
        def read(tx: Tx) -> dict[str, Any] | None:
            user_id = tx.user_id_by_name(username)
            return tx.user(user_id) if user_id else None

        return self._read(read)  # type: ignore[no-any-return]

    def account_by_email(self, email: str) -> accounts.Account | None:
        """The account of the user with that email (ACL grants by ``EmailAddress``)."""
        wanted = email.lower()
        for rec in self.list_users():
            if rec.get("email") == wanted:
                return accounts.of_user(rec)
        return None

    def account_by_canonical_id(self, canonical: str) -> accounts.Account | None:
        """A known account by its canonical id (the default one always exists)."""
        if canonical == accounts.DEFAULT_ACCOUNT.canonical_id:
            return accounts.DEFAULT_ACCOUNT
        for rec in self.list_users():
            account = accounts.of_user(rec)
            if account.canonical_id == canonical:
                return account
        return None

    def list_users(self) -> list[dict[str, Any]]:
        records = self._read(lambda tx: [unpack(v) for _, v in tx.scan("users", b"")])
        return sorted((public_record(r) for r in records), key=lambda r: (r["created_ms"], r["username"]))

    async def authenticate_password(self, username: str, password: str) -> dict[str, Any] | None:
        """The active user with this password, or None. Always runs one argon2 verify (no user-probing by time)."""
        rec = self.get_user_by_name(username) if isinstance(username, str) else None
        if rec is None and not self._dummy_hash:
            self._dummy_hash = await self._hash(secrets.token_hex(16))
        stored = rec["password_hash"] if rec is not None else self._dummy_hash
        ok = await anyio.to_thread.run_sync(self._verify, stored, password if isinstance(password, str) else "")
        if not ok or rec is None or not rec.get("active", True):
            return None
        return public_record(rec)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerificationError, InvalidHashError):
            return False

    def _submit_sync(self, name: str, args: dict[str, Any], actor: str) -> Any:
        result = self.sequencer.execute_sync(Command(name, args, actor))
        if isinstance(result, IamError):
            raise result
        return result

    def seed_root(self, username: str, password: str, user_id: str | None = None) -> dict[str, Any] | None:
        """Start-up with S4_ROOT_PASSWORD: create the root SuperUser on a node that has no IAM user yet, once.

        Later starts change nothing (returning the user named ``username``, or None): a password rotated or a root
        deactivated through the admin API stays so. A lost root password is reset offline (``reset_root``).
        ``user_id``: a pool's nodes all seed the same user (iam.py ``root_user_id``), so the pool has one root.
        """
        if self.list_users():
            rec = self.get_user_by_name(username)
            return public_record(rec) if rec is not None else None
        args = {"username": username, "role": "SuperUser", "password_hash": self._hasher.hash(password)}
        if user_id is not None:
            args["user_id"] = user_id
        return public_record(self._submit_sync("iam_create_user", args, "s4-server"))

    def reset_root(self, username: str, password: str, actor: str = "s4-admin reset-root") -> dict[str, Any]:
        """The operator's recovery (``s4-admin reset-root``, server stopped): ``username`` exists, is an active
        SuperUser and has ``password`` (through events, so the journal records who did it)."""
        check_password(password)
        rec = self.get_user_by_name(username)
        if rec is None:
            return public_record(self._submit_sync("iam_create_user", {
                "username": username, "role": "SuperUser", "password_hash": self._hasher.hash(password)}, actor))
        args: dict[str, Any] = {"user_id": rec["id"], "role": "SuperUser", "active": True}
        if not self._verify(rec["password_hash"], password):
            args["password_hash"] = self._hasher.hash(password)
        return public_record(self._submit_sync("iam_update_user", args, actor))

    # -- credentials ----------------------------------------------------------------------------------------------
    async def create_credential(self, user_id: str, actor: str = "") -> tuple[str, str]:
        """A new key pair for the user (replacing any old one); the plain secret is returned once, never stored."""
        access_key = "S4AK" + "".join(secrets.choice(ACCESS_KEY_ALPHABET) for _ in range(16))
        secret = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(40))
        await self._iam("iam_create_credential", {"user_id": user_id, "access_key": access_key,
                                                  "secret_key": self.keyring.encrypt(secret)}, actor)
        return access_key, secret

    async def delete_credential(self, user_id: str, actor: str = "") -> None:
        await self._iam("iam_delete_credential", {"user_id": user_id}, actor)

    def secret_for(self, access_key: str) -> tuple[str, dict[str, Any]] | None:
        """(plain secret, user) for SigV4, or None if the key is unknown, deleted or its user inactive; an S3Error
        (InvalidAccessKeyId) if its stored secret cannot be decrypted here.

        Two LMDB gets per request (so a deletion or deactivation is seen at once); the decryption is cached by
        ciphertext, so a replaced credential never serves a stale secret.
        """
        def read(tx: Tx) -> tuple[dict[str, Any], dict[str, Any]] | None:
            cred = tx.credential(access_key)
            user = tx.user(cred["user"]) if cred is not None else None
            return (cred, user) if cred is not None and user is not None else None

        found = self._read(read)
        if found is None or not found[1].get("active", True):
            return None
        cred, user = found
        cached = self._secret_cache.get(access_key)
        if cached is None or cached[0] != cred["secret"]:
            if len(self._secret_cache) > 10_000:
                self._secret_cache.clear()
            cached = (cred["secret"], self._decrypt(access_key, cred["secret"]))
            self._secret_cache[access_key] = cached
        return cached[1], public_record(user)

    def account_of_key(self, access_key: str) -> str | None:
        """The id of the account whose user holds ``access_key`` (deleted or inactive users too: the key still
        names who created something), or None when no user holds it (the legacy root keys, the default account's).
        No decryption."""
        def read(tx: Tx) -> dict[str, Any] | None:
            cred = tx.credential(access_key)
            return tx.user(cred["user"]) if cred is not None else None

        user = self._read(read)
        return None if user is None else accounts.of_user(user).id

    def _decrypt(self, access_key: str, ciphertext: str) -> str:
        """The plain secret, or, when this node's keyring cannot decrypt it, the S3 answer for a key this server
        cannot use (403 InvalidAccessKeyId naming the cause, never a 500) and one log line per stored secret saying
        what the operator must fix (the only place a stored secret is decrypted: engine/keyring.py)."""
        try:
            return self.keyring.decrypt(ciphertext)
        except KeyringError as exc:
            if self._undecryptable.get(access_key) != ciphertext:
                if len(self._undecryptable) > 10_000:
                    self._undecryptable.clear()
                self._undecryptable[access_key] = ciphertext
                log.error("S3 access key %s cannot be used: %s (a pool's nodes must share S4_CLUSTER_SECRET and "
                          "S4_CLUSTER_NAME; a single node needs the iam.key its data directory was created with); "
                          "requests signed with it are refused with InvalidAccessKeyId", access_key, exc)
            raise S3Error(ErrorCode.INVALID_ACCESS_KEY_ID, UNUSABLE_KEY_MESSAGE, AWSAccessKeyId=access_key) from exc

    # -- operator statistics --------------------------------------------------------------------------------------
    def storage_stats(self) -> dict[str, Any]:
        """Counts from the views. Blob refcounts are summed by a scan of the blob index (fine below ~100k blobs)."""
        def read(tx: Tx) -> dict[str, Any]:
            buckets = tx.buckets()
            refs = sum(unpack(v)[3] for _, v in tx.scan("blobs", b""))
            unique = tx.txn.stat(tx.dbs["blobs"])["entries"]
            volumes = [unpack(v) for _, v in tx.scan("volumes", b"")]
            return {"buckets": buckets, "unique_blobs": unique, "blob_refs": refs,
                    "live_bytes": sum(v["live"] for v in volumes), "dead_bytes": sum(v["dead"] for v in volumes),
                    "volumes": len(volumes), "damaged_blobs": sum(v.get("bad_blobs", 0) for v in volumes),
                    "damaged_bytes": sum(v.get("bad_bytes", 0) for v in volumes)}

        return self._read(read)  # type: ignore[no-any-return]
