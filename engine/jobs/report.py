"""What a job run examined, did and how long it took: returned to the admin API, logged, kept for status."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunReport:
    job: str
    dry_run: bool = False
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    duration_ms: float = 0.0
    examined: dict[str, int] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def count(self, bucket: dict[str, int], name: str, n: int = 1) -> None:
        bucket[name] = bucket.get(name, 0) + n

    def finish(self) -> RunReport:
        self.duration_ms = round((time.perf_counter() - self._t0) * 1000, 3)
        return self

    def to_dict(self, max_details: int = 1000) -> dict[str, Any]:
        """The report as the admin API returns it (its ``worker`` field, which names the job, is published)."""
        return {"worker": self.job, "dry_run": self.dry_run, "started_ms": self.started_ms,
                "duration_ms": self.duration_ms, "examined": self.examined, "done": self.done,
                "details": self.details[:max_details], "details_truncated": len(self.details) > max_details,
                "errors": self.errors}
