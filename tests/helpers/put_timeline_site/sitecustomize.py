"""Hand-off marks for tests/helpers/put_timeline.py, loaded only when that tool puts this directory on PYTHONPATH
(every process of the pool it starts imports it at start-up; nothing in s4 knows about it: zero cost when off).

Wraps functions on a replicated PUT's path so each call leaves ``<monotonic ns> <thread cpu ns> <pid> <tid> <name>``
lines (``name>`` on entry, ``name<`` on return) in ``$PUT_TIMELINE_DIR/<node>-<pid>.marks``. CLOCK_MONOTONIC is one
clock for every process of the machine, so the marks of the client and of the three nodes line up.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import os
import threading
import time

_DIR = os.environ.get("PUT_TIMELINE_DIR", "")
_lines: list[str] = []
_lock = threading.Lock()
_file = ""


def mark(name: str) -> None:
    line = f"{time.monotonic_ns()} {time.thread_time_ns()} {os.getpid()} {threading.get_native_id()} {name}\n"
    with _lock:
        _lines.append(line)
        if len(_lines) >= 64:
            _flush_locked()


def _flush_locked() -> None:
    global _file
    if not _file:
        _file = os.path.join(_DIR, f"{os.environ.get('S4_NODE_ID', 'client')}-{os.getpid()}.marks")
    with open(_file, "a") as fh:
        fh.write("".join(_lines))
    _lines.clear()


def flush() -> None:
    with _lock:
        if _lines:
            _flush_locked()


def _wrap(target: object, attr: str, name: str) -> None:
    original = inspect.getattr_static(target, attr)
    is_static = isinstance(original, staticmethod)
    func = original.__func__ if is_static else original
    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def wrapper(*args: object, **kwargs: object) -> object:
            mark(name + ">")
            try:
                return await func(*args, **kwargs)
            finally:
                mark(name + "<")
    else:
        @functools.wraps(func)
        def wrapper(*args: object, **kwargs: object) -> object:  # type: ignore[misc]
            mark(name + ">")
            try:
                return func(*args, **kwargs)
            finally:
                mark(name + "<")
    setattr(target, attr, staticmethod(wrapper) if is_static else wrapper)


#: (module, object path inside it, mark name)
POINTS = [
    ("falcon.asgi", "App.__call__", "W.http"),
    ("s4.engine.remote.client", "RemoteSequencer.execute", "W.cmd"),
    ("s4.engine.remote.loop_channel", "_Protocol.data_received", "W.chan_rx"),
    ("s4.engine.remote.service", "SequencerService.handle", "S.handle"),
    ("s4.engine.remote.service", "SequencerService._commit_pending", "S.pending"),
    ("s4.engine.remote.service", "SequencerService._committed", "S.committed"),
    ("s4.engine.remote.service", "SequencerService._reply", "S.answer"),
    ("s4.engine.sequencer", "Sequencer.commit_now", "S.commit_now"),
    ("s4.engine.sequencer", "Sequencer._commit", "seq.commit"),
    ("s4.engine.sequencer", "Sequencer._make_durable", "seq.durable"),
    ("s4.journal.writer", "Journal.write_encoded", "journal.write"),
    ("s4.engine.volumes.store", "VolumeStore.sync", "vol.sync"),
    ("s4.cluster.replicator", "Replicator.send_early", "S.send_early"),
    ("s4.cluster.replicator", "Replicator._start_early", "S.start_early"),
    ("s4.cluster.replicator", "Replicator._launch", "S.launch"),
    ("s4.cluster.replicator", "Replicator._request", "S.request"),
    ("s4.cluster.blob_server", "BlobService.read_inline", "S.read_inline"),
    ("s4.cluster.event_stream", "_Lane.send_now", "S.send_now"),
    ("s4.cluster.replicator", "Replicator._send", "S.send"),
    ("s4.cluster.replicator", "Replicator.replicate", "S.replicate"),
    ("s4.cluster.replicator", "call_quorum", "S.quorum"),
    ("s4.cluster.read_leases", "LeaseGrants.cover", "S.cover"),
    ("s4.cluster.coalesce", "CoalescingTransport._drain", "S.drain"),
    ("s4.cluster.event_stream", "_Lane.call", "S.lane"),
    ("s4.cluster.event_stream", "unpack_reply", "S.reply_in"),
    ("s4.cluster.event_stream", "unpack_request", "P.req_in"),
    ("s4.cluster.event_stream", "pack_reply", "P.reply_out"),
    ("s4.cluster.catch_up", "EventsService.apply_events", "P.apply"),
    ("s4.cluster.blob_server", "BlobService.store_inline", "P.store"),
    ("s4.cluster.wiring", "ReplicaApplier.apply_peer_events", "P.applier"),
    ("grpclib.client", "Stream.send_message", "grpc.csend"),
    ("grpclib.server", "Stream.send_message", "grpc.ssend"),
    ("grpclib.protocol", "H2Protocol.data_received", "h2.rx"),
]


def install() -> None:
    for module, path, name in POINTS:
        try:
            target: object = importlib.import_module(module)
            *owners, attr = path.split(".")
            for owner in owners:
                target = getattr(target, owner)
            _wrap(target, attr, name)
        except Exception as exc:  # noqa: BLE001 - a build without this function: its mark is missing, said once
            print(f"put_timeline: {module}.{path} not traced: {exc!r}", flush=True)


if _DIR:
    install()
    atexit.register(flush)
