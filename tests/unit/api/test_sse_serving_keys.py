"""``sse.keys_for_serving`` answers a plaintext GET/HEAD without opening keys (api/s3/sse.py): the shortcut must
answer exactly as the full path for every combination of the SSE-C headers (None, or the same 400)."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from s4.api.s3 import sse
from s4.engine import Engine, EngineOptions
from s4.engine.errors import S3Error
from s4.engine.model import ObjectVersion

HEADERS = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
           "x-amz-server-side-encryption-customer-key": "c2hvcnQ=",
           "x-amz-server-side-encryption-customer-key-md5": "bWQ1"}


def _outcome(fn: Any, call: Any, version: ObjectVersion, body: bool) -> Any:
    try:
        return fn(call, version, body)
    except S3Error as exc:
        return exc.code, exc.message


def _shortcut(call: Any, version: ObjectVersion, body: bool) -> Any:
    return sse.keys_for_serving(call, version, body=body)


def _full(call: Any, version: ObjectVersion, body: bool) -> Any:
    """What keys_for_serving answered before its plaintext shortcut."""
    if body:
        return sse.read_keys(call, version)
    return None if sse.customer_key(call) is None else sse.read_keys(call, version)


@pytest.mark.parametrize("body", [True, False])
def test_keys_for_serving_plaintext_shortcut_answers_as_the_full_path(tmp_path: Path, body: bool) -> None:
    engine = Engine(EngineOptions(data_dir=tmp_path / "data"))
    try:
        version = ObjectVersion("k", "null", 0)
        for n in range(len(HEADERS) + 1):
            for names in itertools.combinations(HEADERS, n):
                call: Any = SimpleNamespace(headers={"host": "h", **{k: HEADERS[k] for k in names}}, engine=engine,
                                            req=SimpleNamespace(scheme="https"),
                                            settings=SimpleNamespace(sse_c_allow_http=False))
                assert _outcome(_shortcut, call, version, body) == _outcome(_full, call, version, body), names
    finally:
        engine.close()
