"""The journal owner's group-commit numbers, written straight into the multi-process files: a scrape through
``MultiProcessCollector`` must read exactly what was observed, at once (no delay, no sampling), in the families
and under the sample names prometheus_client's instruments used."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from s4.api import journal_metrics
from s4.api.journal_metrics import JournalMetrics
from s4.api.request_metrics import ProcessId
from s4.journal.groupcommit import BATCH_SIZE_BUCKETS, FixedHistogram
from s4.journal.writer import FSYNC_BUCKETS


def _engine(batches: int = 0, commands: int = 0) -> Any:
    journal = SimpleNamespace(stats=SimpleNamespace(fsync_seconds=FixedHistogram(FSYNC_BUCKETS)))
    sequencer = SimpleNamespace(batch_sizes=FixedHistogram(BATCH_SIZE_BUCKETS), stats=(batches, commands))
    return SimpleNamespace(journal=journal, sequencer=sequencer)


def _samples(families: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def _scrape(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return _samples(MultiProcessCollector(None, str(directory)).collect())


def _drive(engine: Any) -> None:
    for size in (1, 1, 3, 4, 4096, 5000):
        engine.sequencer.batch_sizes.observe(size)
    for seconds in (0.0001, 0.003, 0.003, 9.0, 1000.0):
        engine.journal.stats.fsync_seconds.observe(seconds)


def test_a_scrape_reads_every_observation_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(journal_metrics.MULTIPROC_ENV, str(tmp_path))
    engine = _engine(batches=5, commands=9)
    published = JournalMetrics(engine)
    start = _scrape(tmp_path)
    assert start[("s4_group_commit_batches_total", ())] == 5  # counters from the totals so far
    assert start[("s4_group_commit_commands_total", ())] == 9
    assert start[("s4_group_commit_batch_size_count", ())] == 0  # histograms from now, every bucket present
    assert start[("s4_group_commit_batch_size_bucket", (("le", "+Inf"),))] == 0
    _drive(engine)
    got = _scrape(tmp_path)
    assert got[("s4_group_commit_batches_total", ())] == 11
    assert got[("s4_group_commit_commands_total", ())] == 9 + 1 + 1 + 3 + 4 + 4096 + 5000
    bucket = "s4_group_commit_batch_size_bucket"
    assert got[(bucket, (("le", "1.0"),))] == 2  # cumulative, a value on a bound counted in that bucket
    assert got[(bucket, (("le", "2.0"),))] == 2
    assert got[(bucket, (("le", "4.0"),))] == 4
    assert got[(bucket, (("le", "4096.0"),))] == 5
    assert got[(bucket, (("le", "+Inf"),))] == 6
    assert got[("s4_group_commit_batch_size_sum", ())] == 1 + 1 + 3 + 4 + 4096 + 5000
    assert got[("s4_journal_fsync_seconds_count", ())] == 5
    assert got[("s4_journal_fsync_seconds_sum", ())] == pytest.approx(0.0001 + 0.003 + 0.003 + 9.0 + 1000.0)
    assert got[("s4_journal_fsync_seconds_bucket", (("le", "+Inf"),))] == 5
    published.close()
    _drive(engine)
    assert _scrape(tmp_path) == got  # closed: nothing more is counted


def test_the_files_and_a_registry_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(journal_metrics.MULTIPROC_ENV, str(tmp_path))
    engine = _engine(batches=2, commands=3)
    files = JournalMetrics(engine)
    registry = CollectorRegistry()
    memory = JournalMetrics(engine, registry)  # from memory, subscribed to the same histograms
    _drive(engine)
    from_files = _scrape(tmp_path)
    from_memory = {k: v for k, v in _samples(registry.collect()).items() if not k[0].endswith("_created")}
    assert from_files == from_memory
    files.close()
    memory.close()


def test_a_forked_child_counts_afresh_in_files_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(journal_metrics.MULTIPROC_ENV, str(tmp_path))
    engine = _engine(batches=4, commands=4)
    published = JournalMetrics(engine)
    _drive(engine)
    before = _scrape(tmp_path)
    monkeypatch.setattr(ProcessId, "value", ProcessId.value + 1_000_000)
    engine.sequencer.batch_sizes.observe(2)
    after = _scrape(tmp_path)  # the parent's file plus the child's: the child's counts only what it observed
    assert after[("s4_group_commit_batches_total", ())] == before[("s4_group_commit_batches_total", ())] + 1
    assert after[("s4_group_commit_batch_size_count", ())] == before[("s4_group_commit_batch_size_count", ())] + 1
    assert len(list(tmp_path.glob("counter_s4journal_*.db"))) == 2
    published.close()


def test_it_needs_the_journal_and_a_place_to_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(journal_metrics.MULTIPROC_ENV, raising=False)
    with pytest.raises(ValueError):
        JournalMetrics(SimpleNamespace(journal=None))
    with pytest.raises(RuntimeError):
        JournalMetrics(_engine())
