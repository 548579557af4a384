"""The dashboard's request charts: the S3 API's own request series (``s4_requests_total``,
``s4_request_duration_seconds``) read in process from the collectors ``/metrics`` renders (api/metrics.py
``request_totals``), as JSON that ``static/charts.js`` polls and turns into rates and mean latencies.

Totals, not rates: the browser takes the difference of two polls, so no process keeps a history and any worker can
answer any poll (with several workers the totals are every process's, summed from the multi-process files)."""

from __future__ import annotations

import json
import re
import time

import anyio.to_thread
import falcon

from ..metrics import request_totals
from .app import Page, Route


def routes() -> list[Route]:
    return [("GET", re.compile(r"/api/metrics"), metrics_json, "user")]


async def metrics_json(page: Page) -> None:
    """``{"enabled", "at", "requests", "errors", "count", "sum", "buckets"}``: cumulative since each process
    started; ``enabled`` false when S4_METRICS_ENABLED is off (the charts say so)."""
    totals = await anyio.to_thread.run_sync(request_totals, page.console.engine)  # several workers: reads files
    body = {"enabled": totals is not None, "at": time.time(), **(totals or {})}
    page.resp.status = falcon.HTTP_200
    page.resp.content_type = "application/json"
    page.resp.text = json.dumps(body)
