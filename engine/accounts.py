"""Accounts: who owns a bucket, and whose buckets a user's role reaches (issue 21; docs/architecture/access-control.md).

An account is named when its first user is created (admin API ``"account"``); its ids derive from the name, so
two nodes of a pool creating users of one new account at once agree on it without coordinating, and an account
needs no event of its own: the ``user.created`` event names it, and the user and bucket records carry it.

    name        what the admin API takes and ``DisplayName`` shows         "default" for the default account
    id          12 digits, the ARN's account part (arn:aws:iam::<id>:...)  000000000000 for the default account
    canonical   64 hex digits, the ``Owner``/``Grantee`` ``ID`` of S3      sha256 of the id (every account alike)

The root (legacy ``S4_ACCESS_KEY_ID`` keys) and every user created without an account belong to the default
account, and so does every bucket created before accounts existed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from .policy.principals import DEFAULT_ACCOUNT_ID

DEFAULT_ACCOUNT_NAME = "default"
ACCOUNT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+=,$-]{0,63}$")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str

    @property
    def canonical_id(self) -> str:
        return canonical_id(self.id)


def account_id(name: str) -> str:
    """The 12-digit id of the account named ``name`` (deterministic: every node derives the same)."""
    if name in (DEFAULT_ACCOUNT_NAME, DEFAULT_ACCOUNT_ID):
        return DEFAULT_ACCOUNT_ID
    number = int.from_bytes(hashlib.sha256(b"s4-account\0" + name.encode()).digest()[:8], "big") % 10**12
    return f"{number or 1:012d}"


def canonical_id(account: str) -> str:
    """S3's canonical user id of an account: 64 hex digits. Remembered per account id (a pure function, asked on
    every object read's access check: a sha256 per request otherwise); bounded."""
    found = _canonical.get(account)
    if found is None:
        if len(_canonical) >= _CANONICAL_LIMIT:
            _canonical.clear()
        found = _canonical[account] = hashlib.sha256(b"s4-canonical\0" + account.encode()).hexdigest()
    return found


_canonical: dict[str, str] = {}
_CANONICAL_LIMIT = 4096


DEFAULT_ACCOUNT = Account(DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_NAME)


def check_account_name(name: Any) -> str:
    """A valid account name (ValueError with the reason otherwise)."""
    if not isinstance(name, str) or not ACCOUNT_NAME_RE.match(name):
        raise ValueError("account must be 1-64 characters of letters, digits and _.@+=,$- (starting with a letter "
                         "or digit)")
    return DEFAULT_ACCOUNT_NAME if name == DEFAULT_ACCOUNT_ID else name


def check_email(email: Any) -> str:
    if not isinstance(email, str) or not _EMAIL_RE.match(email):
        raise ValueError("email must look like name@domain")
    return email.lower()


def of_user(record: dict[str, Any]) -> Account:
    """The account of a user record (users created before accounts: the default one)."""
    name = record.get("account") or DEFAULT_ACCOUNT_NAME
    return Account(account_id(name), name)


def of_bucket(account: str, name: str) -> Account:
    """A bucket record's owner (``Bucket.account``/``account_name``; empty: created before accounts)."""
    return Account(account, name) if account else DEFAULT_ACCOUNT
