"""An admin token issued by a clock ahead of this one (another node of a pool, or this node before a restart with
its clock set back) is valid: PyJWT refuses an `iat` in the future by default, which answered 401 after a skewed
restart (seen in the Jepsen run)."""

from __future__ import annotations

import time

import pytest

from s4.api.admin.tokens import TokenIssuer
from s4.engine.iam import IamError


def test_a_token_issued_by_a_clock_25_s_ahead_is_valid_and_an_expired_one_is_not() -> None:
    issuer = TokenIssuer("a-secret-for-this-test-of-32-bytes-at-least", ttl_s=3600)
    ahead, _ = issuer.issue({"id": "u1"}, now=time.time() + 25)
    assert issuer.claims(ahead)["sub"] == "u1"
    expired, _ = issuer.issue({"id": "u1"}, now=time.time() - 7200)
    with pytest.raises(IamError):
        issuer.claims(expired)
