"""tools/malloc_tuning.py: with glibc's default thresholds, MiB-sized buffers freed and allocated again (a blob
transfer's pieces) fault their pages in afresh each time, because the heap's free top is trimmed back to the kernel
(~180,000 minor faults per 64 MiB PUT on a pool's coordinator); after ``tune_malloc`` they are reused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from s4.tools.malloc_tuning import tune_malloc

CHURN = """
import resource, sys
from s4.tools.malloc_tuning import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc(True, {})
def churn():
    bufs = [bytes(1 << 20) for _ in range(8)]  # eight 1 MiB pieces in flight, then all freed
    del bufs
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_issue19_freed_mib_buffers_are_reused_without_faulting_their_pages_in_again() -> None:
    default, tuned = faults("default"), faults("tuned")
    assert default > 50 * 100  # the default: every round faults pages in again (~240 per round measured)
    assert tuned * 3 < default  # tuned: ~1,800 against ~12,000 measured


def test_issue19_the_operators_own_malloc_settings_and_off_leave_glibc_alone() -> None:
    assert not tune_malloc(True, {"MALLOC_TRIM_THRESHOLD_": "1"})
    assert not tune_malloc(False, {})
