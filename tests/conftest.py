"""Test-suite wide configuration: makes ``tests/helpers`` importable (``from helpers.x import y``)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from hypothesis import HealthCheck, settings  # noqa: E402

# Property tests check formats and replay, not speed: no per-example deadline (a loaded 2-core CI box must not
# turn a slow example into a failure), and no health check on slow data generation.
settings.register_profile("s4", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("s4")
