"""Bucket notification targets and parked messages (SuperUser):

- ``GET /api/admin/notify/targets``: each target's id, ARN, endpoint, cursor, events behind and parked count;
- ``GET /api/admin/notify/parked[?target=ID]``: messages that failed S4_NOTIFY_MAX_ATTEMPTS tries, with the error;
- ``POST /api/admin/notify/parked/retry[?target=ID]`` (optional JSON ``{"ids": [...]}``): hand them back to the
  delivery job, which tries each once more (parked again if it fails). Answers how many were handed back;
- ``POST /api/admin/notify/parked/discard[?target=ID]`` (optional ``{"ids": [...]}``): delete them for good.

The state is files in the data directory (engine/notify/store.py), so any worker answers.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from s4.engine.iam import IamError
from s4.engine.notify.store import NotifyStore
from s4.engine.notify.targets import arn_of

from .call import AdminCall, Result


def _store(call: AdminCall) -> NotifyStore:
    return NotifyStore(call.engine.options.data_dir)


def _targets(call: AdminCall) -> list[str]:
    known = sorted(call.api.settings.notify_targets)
    wanted = call.query.get("target")
    if wanted is None:
        return known
    if wanted not in known:
        raise IamError(404, f"no notification target {wanted!r}")
    return [wanted]


async def list_targets(call: AdminCall) -> Result:
    store, last = _store(call), call.engine.views.last_seq()

    def read() -> list[dict[str, Any]]:
        out = []
        for target in _targets(call):
            cursor = store.cursor(target)
            out.append({"id": target, "arn": arn_of(target), "cursor": cursor,
                        "behind": None if cursor is None else max(0, last - cursor),
                        "parked": store.count(target)})
        return out

    return 200, {"targets": await anyio.to_thread.run_sync(read)}


async def list_parked(call: AdminCall) -> Result:
    store = _store(call)

    def read() -> list[dict[str, Any]]:
        return [p.to_json() for target in _targets(call) for p in store.listed(target)]

    return 200, {"parked": await anyio.to_thread.run_sync(read)}


async def _ids(call: AdminCall) -> list[str] | None:
    ids = (await call.json()).get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise IamError(400, "ids must be a list of parked message ids")
    return ids


async def retry_parked(call: AdminCall) -> Result:
    ids, store = await _ids(call), _store(call)
    moved = await anyio.to_thread.run_sync(lambda: sum(store.request_retry(t, ids) for t in _targets(call)))
    return 200, {"retrying": moved}


async def discard_parked(call: AdminCall) -> Result:
    ids, store = await _ids(call), _store(call)
    gone = await anyio.to_thread.run_sync(lambda: sum(store.discard(t, ids) for t in _targets(call)))
    return 200, {"discarded": gone}
