"""Who a request is, in policy terms: ARNs of S4's root and users, and the account they belong to.

Every user belongs to one account (engine/accounts.py: ids derive from the account's name); the legacy root keys
and users created without an account belong to the default one, ``DEFAULT_ACCOUNT_ID``.

    root (legacy S4_ACCESS_KEY_ID pair, and the IAM user seeded as root)  arn:aws:iam::<account>:root
    an IAM user named NAME                                                 arn:aws:iam::<account>:user/NAME
    an unsigned request                                                    (anonymous: matched only by "*")
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ACCOUNT_ID = "000000000000"
"""The default account (the root keys' and every user created without an account): 12 digits like an AWS id."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: ``kind`` is "anonymous", "root" or "user"; ``role`` is its S4 role (None when anonymous)."""

    kind: str
    account: str = ""
    arn: str = ""
    username: str = ""
    userid: str = ""
    role: str | None = None
    canonical_id: str = ""
    account_name: str = ""  # the account's name (engine/accounts.py): the Owner's DisplayName

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"

    @property
    def label(self) -> str:
        """How a refusal names the caller in the log."""
        return "anonymous" if self.anonymous else self.arn


def anonymous() -> Principal:
    return Principal("anonymous")


def root_principal(account: str = DEFAULT_ACCOUNT_ID, canonical_id: str = "", userid: str = "",
                   account_name: str = "") -> Principal:
    """The account's root: SuperUser, and allowed to manage the bucket policy whatever it says (AWS's lock-out
    escape)."""
    return Principal("root", account, f"arn:aws:iam::{account}:root", "", userid or account, "SuperUser",
                     canonical_id, account_name)


def user_principal(username: str, userid: str, role: str, account: str = DEFAULT_ACCOUNT_ID,
                   canonical_id: str = "", account_name: str = "") -> Principal:
    return Principal("user", account, f"arn:aws:iam::{account}:user/{username}", username, userid, role,
                     canonical_id, account_name)
