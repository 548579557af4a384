"""Several pools (docs/architecture/pools.md, "IAM across pools"): a node outside the registry pool that does not
know an IAM access key asks the registry pool's IAM (a fresh IAM feed round) before it answers InvalidAccessKeyId,
and only then; a feed that cannot reach the registry is a 503, never a guess (api/app.py ``_feed_or_raise``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from types import SimpleNamespace
from typing import Any

import pytest

from s4.api.app import S3Service
from s4.api.s3.post_object import PostObject
from s4.engine.errors import ErrorCode, S3Error, ServiceUnavailableError

KEY = "S4AK" + "A" * 16


class Feed:
    def __init__(self, known_after: bool = True, reachable: bool = True) -> None:
        self.refreshes = 0
        self.known_after, self.reachable = known_after, reachable
        self.known: set[str] = set()

    async def refresh(self) -> None:
        self.refreshes += 1
        if not self.reachable:
            raise ServiceUnavailableError("no majority", "retry later")
        if self.known_after:
            self.known.add(KEY)


def service(feed: Feed | None, iam: bool = True, code: ErrorCode = ErrorCode.INVALID_ACCESS_KEY_ID) -> Any:
    def authenticate(req: Any, raw_path: str, query: str, headers: Any, bucket: str, vhost: bool) -> str:
        key = headers["key"]
        if feed is not None and key in feed.known:
            return "authenticated"
        raise S3Error(code, AWSAccessKeyId=key)

    svc = SimpleNamespace(authenticate=authenticate, engine=SimpleNamespace(iam_feed=feed),
                          settings=SimpleNamespace(iam_enabled=iam))
    svc.with_iam_feed = lambda verify: S3Service.with_iam_feed(svc, verify)  # type: ignore[arg-type]
    svc._feed_or_raise = lambda exc: S3Service._feed_or_raise(svc, exc)  # type: ignore[arg-type]
    return svc


def run(svc: Any, key: str = KEY) -> str:
    return asyncio.run(S3Service._authenticate(svc, None, "/b/k", "", {"key": key}, "b", False))  # type: ignore[arg-type]


def test_unknown_iam_key_is_looked_for_in_the_registry_before_invalid_access_key_id() -> None:
    feed = Feed()
    assert run(service(feed)) == "authenticated" and feed.refreshes == 1


def test_a_key_the_registry_does_not_hold_either_is_invalid_access_key_id() -> None:
    feed = Feed(known_after=False)
    with pytest.raises(S3Error) as refused:
        run(service(feed))
    assert refused.value.code is ErrorCode.INVALID_ACCESS_KEY_ID and feed.refreshes == 1


def test_registry_unreachable_is_503_not_invalid_access_key_id() -> None:
    feed = Feed(reachable=False)
    with pytest.raises(ServiceUnavailableError):
        run(service(feed))


@pytest.mark.parametrize("case", ["not-iam-key", "single-pool", "iam-off", "bad-signature"])
def test_nothing_is_asked_when_the_registry_cannot_know_better(case: str) -> None:
    feed = Feed()
    svc = service(None if case == "single-pool" else feed, iam=case != "iam-off",
                  code=ErrorCode.SIGNATURE_DOES_NOT_MATCH if case == "bad-signature" else
                  ErrorCode.INVALID_ACCESS_KEY_ID)
    with pytest.raises(S3Error):
        run(svc, "AKIAEXAMPLE" if case == "not-iam-key" else KEY)
    assert feed.refreshes == 0


def test_post_object_form_signed_with_an_unknown_iam_key_asks_the_registry_too() -> None:
    """A browser form signed with an IAM key created on the registry pool moments ago (issue 21: POST object)."""
    feed = Feed()
    svc = service(feed)
    form = PostObject(SimpleNamespace(), lambda key: "secret" if key in feed.known else None,  # type: ignore[arg-type]
                      svc.with_iam_feed)
    policy = base64.b64encode(b'{"expiration": "2099-01-01T00:00:00Z", "conditions": []}').decode()
    signature = base64.b64encode(hmac.new(b"secret", policy.encode(), hashlib.sha1).digest()).decode()
    fields = {"awsaccesskeyid": KEY, "policy": policy, "signature": signature}
    signer = asyncio.run(form.signer(fields))
    assert signer is not None and signer.access_key == KEY and signer.form and feed.refreshes == 1
    with pytest.raises(S3Error) as refused:
        asyncio.run(form.signer({**fields, "awsaccesskeyid": "S4AK" + "B" * 16}))
    assert refused.value.code is ErrorCode.INVALID_ACCESS_KEY_ID and feed.refreshes == 2
