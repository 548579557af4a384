"""Operator statistics: ``/api/stats`` (open) and ``/api/admin/bucket-stats`` (SuperUser)."""

from __future__ import annotations

import time

import anyio.to_thread

from .call import AdminCall, Result
from .tokens import rfc3339


async def get_stats(call: AdminCall) -> Result:
    stats = await anyio.to_thread.run_sync(call.engine.storage_stats)
    buckets = stats["buckets"]
    unique, refs = stats["unique_blobs"], stats["blob_refs"]
    return 200, {
        "uptime_seconds": int(time.time() - call.api.started),
        "buckets_count": len(buckets),
        "objects_count": sum(b.object_count for b in buckets),
        "storage_used_bytes": sum(b.bytes_stored for b in buckets),
        "dedup_unique_blobs": unique,
        "dedup_total_references": refs,
        "dedup_ratio": round(refs / unique, 4) if unique else 1.0,
    }


async def bucket_stats(call: AdminCall) -> Result:
    buckets = call.engine.list_buckets()
    rows = [{"name": b.name, "objects_count": b.object_count, "storage_used_bytes": b.bytes_stored,
             "created_at": rfc3339(b.created_ms)} for b in buckets]
    return 200, {"buckets": rows, "total_storage_bytes": sum(b.bytes_stored for b in buckets)}
