"""Keys, ranges and page sizes driven through the real HTTP layer against a dict model (hypothesis, stateful).

Any valid key (UTF-8, 1 to 1,024 bytes, long segments and long shared prefixes included) must round-trip through
PUT, GET, Range GET, HEAD, CopyObject, DELETE and paged listings (flat and with a delimiter) exactly as the model
says; 1,025 bytes must be KeyTooLongError and change nothing. Bounded: a few dozen runs of at most 20 steps.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

MAX_KEY_BYTES = 1024

_PIECES = st.one_of(
    st.sampled_from(["a", "b", "/", "é", "中", "~", " ", "+", "%", ".", "0", "\t", "😀", "a/", "/b"]),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
    st.sampled_from(["x" * 300, "y" * 511, "é" * 200]),  # long segments and long shared prefixes
)
KEYS = st.lists(_PIECES, min_size=1, max_size=10).map("".join).filter(
    lambda k: 1 <= len(k.encode()) <= MAX_KEY_BYTES)
BODIES = st.one_of(st.binary(max_size=64), st.integers(0, 200_000).map(lambda n: bytes(i % 251 for i in range(n))))


def _s3_order(keys: Any) -> list[str]:
    return sorted(keys, key=lambda k: k.encode())


def expected_range(size: int, spec: tuple[str, int, int]) -> tuple[int, int] | None:
    """(start, end inclusive) S3 serves for a satisfiable range, None for 416."""
    kind, a, b = spec
    if kind == "suffix":
        return (max(0, size - a), size - 1) if a > 0 and size > 0 else None
    if a >= size:
        return None
    return a, size - 1 if kind == "open" else min(b, size - 1)


def error_code(exc: ClientError, key: str) -> str:
    """The S3 error code; an error document naming a key with C0 controls is not XML 1.0 (AWS sends character
    references too), so botocore falls back to the status there and only the status can be checked."""
    code = str(exc.response["Error"]["Code"])
    if code.isdigit() and any(ord(c) < 0x20 and c not in "\t\n" for c in key):
        return {"404": "NoSuchKey"}.get(code, code)
    return code


def range_header(spec: tuple[str, int, int]) -> str:
    kind, a, b = spec
    return {"suffix": f"bytes=-{a}", "open": f"bytes={a}-", "closed": f"bytes={a}-{b}"}[kind]


RANGES = st.tuples(st.sampled_from(["suffix", "open", "closed"]), st.integers(0, 210_000),
                   st.integers(0, 210_000)).map(lambda t: (t[0], t[1], max(t[1], t[2])))


@pytest.fixture(scope="module")
def machine_s3(s3: Any) -> Any:
    return s3


class HttpModel(RuleBasedStateMachine):
    s3: Any = None

    @initialize()
    def make_bucket(self) -> None:
        self.bucket = f"model-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=self.bucket)
        self.model: dict[str, bytes] = {}

    def _existing_or(self, data: Any) -> str:
        if self.model and data.draw(st.booleans()):
            return str(data.draw(st.sampled_from(sorted(self.model))))
        return str(data.draw(KEYS))

    @rule(key=KEYS, body=BODIES)
    def put(self, key: str, body: bytes) -> None:
        resp = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        assert resp["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        self.model[key] = body

    @rule(data=st.data())
    def get(self, data: Any) -> None:
        key = self._existing_or(data)
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            assert error_code(exc, key) == "NoSuchKey" and key not in self.model, exc.response
            return
        assert body == self.model[key]

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data(), spec=RANGES)
    def get_range(self, data: Any, spec: tuple[str, int, int]) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, v in self.model.items() if v)))
        body = self.model[key]
        want = expected_range(len(body), spec)
        try:
            resp = self.s3.get_object(Bucket=self.bucket, Key=key, Range=range_header(spec))
        except ClientError as exc:
            assert want is None and exc.response["Error"]["Code"] == "InvalidRange", (spec, exc.response)
            return
        assert want is not None, (spec, resp["ResponseMetadata"]["HTTPStatusCode"])
        assert resp["Body"].read() == body[want[0]: want[1] + 1]
        assert resp["ContentRange"] == f"bytes {want[0]}-{want[1]}/{len(body)}"

    @rule(data=st.data())
    def head(self, data: Any) -> None:
        key = self._existing_or(data)
        try:
            resp = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "404" and key not in self.model
            return
        assert resp["ContentLength"] == len(self.model[key])

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), dst=KEYS)
    def copy(self, data: Any, dst: str) -> None:
        src = data.draw(st.sampled_from(sorted(self.model)))
        if src == dst:  # onto itself with nothing changed: S3 refuses it, and nothing changes
            with pytest.raises(ClientError) as refused:
                self.s3.copy_object(Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src})
            assert refused.value.response["Error"]["Code"] == "InvalidRequest"
            return
        self.s3.copy_object(Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src})
        self.model[dst] = self.model[src]

    @rule(data=st.data())
    def delete(self, data: Any) -> None:
        key = self._existing_or(data)
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        self.model.pop(key, None)

    @rule(extra=st.text(st.sampled_from("ab/é"), min_size=1, max_size=8))
    def key_too_long(self, extra: str) -> None:
        key = ("k" * MAX_KEY_BYTES + extra)
        with pytest.raises(ClientError) as err:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"x")
        assert err.value.response["Error"]["Code"] == "KeyTooLongError"

    @rule(page=st.integers(1, 7), data=st.data())
    def list_flat(self, page: int, data: Any) -> None:
        prefix = data.draw(st.sampled_from(["", *{k[:n] for k in self.model for n in (1, 3, 300)}]))
        seen: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": page}
        for _ in range(len(self.model) + 2):
            resp = self.s3.list_objects_v2(**kwargs)
            seen += [o["Key"] for o in resp.get("Contents", [])]
            if not resp["IsTruncated"]:
                break
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]
        assert seen == _s3_order(k for k in self.model if k.startswith(prefix))

    @rule(page=st.integers(1, 7))
    def list_delimited(self, page: int) -> None:
        keys: list[str] = []
        prefixes: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Delimiter": "/", "MaxKeys": page}
        for _ in range(len(self.model) + 2):
            resp = self.s3.list_objects_v2(**kwargs)
            keys += [o["Key"] for o in resp.get("Contents", [])]
            prefixes += [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
            if not resp["IsTruncated"]:
                break
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]
        assert keys == _s3_order(k for k in self.model if "/" not in k)
        assert prefixes == _s3_order({k[: k.index("/") + 1] for k in self.model if "/" in k})


def test_http_layer_matches_a_dict_model(machine_s3: Any) -> None:
    HttpModel.s3 = machine_s3
    run = HttpModel.TestCase
    run.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
    run().runTest()
