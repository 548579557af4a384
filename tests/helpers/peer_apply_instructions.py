"""Instructions per ApplyEventsStream message on a replica (issue 19's 4 KiB PUT), a measure the machine's load does
not move: the receiving half of one message, from its bytes as grpclib hands them over to its reply's bytes, with
the events area, the inline blob store and the sequencer thread of a real engine (no sockets, no HTTP/2).

A coordinator engine (node a) stores ``--base + --extra`` distinct 4 KiB objects first, uninstrumented; each write's
logical events and its blob become one ``ApplyEventsStreamRequest`` as the coordinator's stream lane sends it
(``pack_request``, betterproto2's encoding). The replica (node b: its own engine, ``BlobService``, ``EventsService``
over ``ReplicaApplier``) then takes them one at a time through the gRPC server's ApplyEventsStream handler (c=1:
the next message is given once the reply to the previous one is out), each message decoded with the gRPC server's
codec and each reply encoded with it. The run with ``--base`` messages is subtracted from the run with ``--base +
--extra``.

    python -m tests.helpers.peer_apply_instructions [--base 50] [--extra 500] [--python OTHER_VENV_PYTHON]
    python -m tests.helpers.peer_apply_instructions --cpu [--extra 2000]   # thread CPU per message, no valgrind

Needs ``valgrind`` on PATH (not for ``--cpu``). ``--python`` measures another build.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_io import put  # noqa: E402 - this file also runs by path under another build's interpreter
from request_instructions import build_cgregion  # noqa: E402

from s4.cluster import event_stream  # noqa: E402
from s4.cluster.blob_server import BlobService  # noqa: E402
from s4.cluster.catch_up import EventsService, replicated  # noqa: E402
from s4.cluster.event_stream import pack_request  # noqa: E402
from s4.cluster.pre_encoded import BlobCodec  # noqa: E402
from s4.cluster.wire.s4cluster.v1 import (  # noqa: E402
    ApplyEventsRequest,
    ApplyEventsStreamReply,
    ApplyEventsStreamRequest,
    BlobTransfer,
    InlineBlob,
    JournalRange,
)
from s4.cluster.wiring import ReplicaApplier  # noqa: E402
from s4.engine import Engine, EngineOptions  # noqa: E402
from s4.engine.local_commit import LocalCommitPath  # noqa: E402
from s4.engine.views.env import Views  # noqa: E402
from s4.journal.codec import encode_event  # noqa: E402

BUCKET = "peer-apply"


def _engine(directory: Path) -> tuple[Engine, LocalCommitPath]:
    path = LocalCommitPath()
    path.pooled = True  # a pool member's views: they take peer events
    return Engine(EngineOptions(directory), path), path


async def _requests(a: Engine, total: int) -> tuple[list[bytes], list[bytes]]:
    """The bucket's creation (encoded events), then per object write one encoded stream request."""
    assert a.journal is not None
    await a.create_bucket(BUCKET)
    setup = [encode_event(e) for e in a.journal.read(1) if replicated(e)]
    head = a.journal.last_seq
    codec, out = BlobCodec(), []
    for i in range(total):
        data = os.urandom(4096)
        await put(a, BUCKET, f"o-{i:06d}", data)
        events = [e for e in a.journal.read(head + 1) if replicated(e)]
        request = ApplyEventsRequest(events=[encode_event(e) for e in events], blobs=BlobTransfer.INLINE,
                                     inline_blobs=[InlineBlob(content_hash=hashlib.sha256(data).digest(),
                                                              size=len(data), data=data)],
                                     journal_ranges=[JournalRange(after=head, through=a.journal.last_seq)])
        head = a.journal.last_seq
        packed, claims = pack_request(request)
        out.append(codec.encode(ApplyEventsStreamRequest(id=i + 1, packed=packed, claims=claims, timeout_ms=5000),
                                ApplyEventsStreamRequest))
    return setup, out


async def _serve(service: EventsService, wire: list[bytes]) -> None:
    """``wire`` through the gRPC server's ApplyEventsStream path one message at a time, each reply encoded as the
    server sends it: ``serve_messages`` where the build has it (the server's path since it), else ``serve_stream``
    under the two async iterators the server had then (``ClusterService.apply_events_stream`` and betterproto2's
    loop that sends what it yields)."""
    codec = BlobCodec()
    given: asyncio.Queue[bytes | None] = asyncio.Queue()
    sent: asyncio.Queue[ApplyEventsStreamReply] = asyncio.Queue()

    async def messages() -> AsyncIterator[ApplyEventsStreamRequest]:
        while (data := await given.get()) is not None:
            yield codec.decode(data, ApplyEventsStreamRequest)

    async def send(reply: ApplyEventsStreamReply) -> None:
        codec.encode(reply, ApplyEventsStreamReply)
        sent.put_nowait(reply)

    async def older() -> None:
        async def service_method() -> AsyncIterator[ApplyEventsStreamReply]:
            async for reply in event_stream.serve_stream("node-a", service, messages()):
                yield reply
        async for reply in service_method():
            await send(reply)

    serve_messages = getattr(event_stream, "serve_messages", None)
    loop = asyncio.get_running_loop()
    runner = loop.create_task(older() if serve_messages is None else
                              serve_messages("node-a", service, messages(), send))
    for data in wire:
        given.put_nowait(data)
        reply = await sent.get()
        if reply.status:
            raise RuntimeError(f"message {reply.id} refused: {reply.status} {reply.message}")
    given.put_nowait(None)
    await runner


def _run(count: int, total: int, start: bool, cpu: bool) -> None:
    Views.__init__.__kwdefaults__["map_size"] = 1 << 30  # valgrind cannot map the default 1 TiB
    with tempfile.TemporaryDirectory(prefix="s4-peer-apply-") as tmp:
        a, _ = _engine(Path(tmp) / "a")
        b, path = _engine(Path(tmp) / "b")
        try:
            setup, wire = asyncio.run(_requests(a, total))
            blobs = BlobService(b.views, b.volumes, space=b.space)
            assert b.journal is not None
            service = EventsService(b.journal, ReplicaApplier(path, blobs.staged), inline=blobs)
            asyncio.run(service.apply_events("node-a", ApplyEventsRequest(events=setup)))
            if start:
                _start_instrumentation()
            t0, c0 = time.perf_counter(), time.process_time()
            asyncio.run(_serve(service, wire[:count]))
            if cpu:
                wall, used = time.perf_counter() - t0, time.process_time() - c0
                print(f"{count} messages: {used / count * 1e6:.1f} µs CPU (all threads), {wall / count * 1e6:.1f} "
                      "µs wall per message")
        finally:
            a.close()
            b.close()


def _start_instrumentation() -> None:
    try:
        import cgregion  # type: ignore[import-not-found]  # built by build_cgregion
    except ImportError:
        return
    cgregion.start()


def _collected(python: str, count: int, total: int, out: str | None) -> int:
    with tempfile.TemporaryDirectory(prefix="s4-instr-") as tmp:
        late = build_cgregion(Path(tmp), python)
        cmd = ["valgrind", "--tool=callgrind", *(["--instr-atstart=no"] if late else []),
               f"--callgrind-out-file={out or tmp + '/out'}", python, __file__, "--run", str(count),
               "--total", str(total)]
        env = dict(os.environ, PYTHONHASHSEED="0",
                   PYTHONPATH=os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH")) if p))
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--base", type=int, default=50)
    parser.add_argument("--extra", type=int, default=500)
    parser.add_argument("--cpu", action="store_true", help="thread CPU per message in this process, no valgrind")
    parser.add_argument("--keep", help="keep the two callgrind outputs as KEEP.base and KEEP.more (callgrind_annotate)")
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # inside valgrind: just the messages
    parser.add_argument("--total", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        _run(args.run, args.total, start=True, cpu=False)
        return
    total = args.base + args.extra
    if args.cpu:
        _run(args.extra, args.extra, start=False, cpu=True)
        return
    keep = (f"{args.keep}.base", f"{args.keep}.more") if args.keep else (None, None)
    base = _collected(args.python, args.base, total, keep[0])
    more = _collected(args.python, total, total, keep[1])
    print(f"ApplyEventsStream message (4 KiB PUT, inline blob): {(more - base) / args.extra:,.0f} instructions")


if __name__ == "__main__":
    main()
