"""CPU per 4 KiB PUT of the commit path alone, without HTTP: one process, or a worker and its supervisor.

    python -m s4.tools.bench_commit [--mode remote|local|both] [--puts 3000] [--concurrency 16] [--rounds 3]

``local``: one engine over ``LocalCommitPath`` (the ``S4_WORKERS=1`` server minus HTTP). ``remote``: a forked
child runs the supervisor's engine and ``SequencerService`` (engine/remote/service.py); this process runs a worker's
engine over its ``LoopChannel`` (the ``S4_WORKERS`` > 1 server minus HTTP and minus the second worker). Each PUT
is ``Engine.ingest`` of a fresh 4 KiB body plus ``Engine.put_object``: the volume append, the command over the
channel, the sequencer's decide, journal + fsyncs, projection and reply. The report is CPU seconds (user + system)
of each process per PUT, which a loaded machine moves far less than the HTTP benchmark's figures (no sockets to
clients, no access log, no client in the same CPU budget).

Run as a file it also measures an older tree: ``/path/to/old-venv/bin/python tools/bench_commit.py`` imports that
venv's ``s4`` (commit 88cfb94's engine took ``sequencer_channel=`` instead of a commit path; both are handled).
Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
BODY = 4096


def _child_cpu(pid: int) -> float:
    return sum(_child_user_system(pid))


def _child_user_system(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _engine(data_dir: str, **kwargs: Any) -> Any:
    from s4.engine import Engine, EngineOptions

    return Engine(EngineOptions(data_dir=data_dir, **kwargs))  # type: ignore[arg-type]


def _serve_supervisor(data_dir: str, sock: socket.socket, ready: int) -> None:
    """The forked child: the supervisor's engine and its SequencerService on one end of the socketpair."""
    import uvloop

    from s4.engine.remote import SequencerService

    async def serve() -> None:
        engine = _engine(data_dir)
        path = getattr(engine, "_commit_path", None)
        sequencer = path.sequencer if path is not None else engine.sequencer
        service = SequencerService(sequencer, None, asyncio.get_running_loop(), engine.login_throttle)
        link = await service.attach(sock, "worker-1")
        await engine.create_bucket("bench", actor="bench")
        os.write(ready, b"r")
        while not link.closed:
            await asyncio.sleep(0.05)
        engine.close()

    uvloop.run(serve())


async def _puts(engine: Any, count: int, concurrency: int) -> float:
    body = os.urandom(BODY)
    next_index = iter(range(count))

    async def one() -> None:
        for i in next_index:
            data = body[:-8] + i.to_bytes(8, "big")  # every body new: no deduplication

            async def pieces(data: bytes = data) -> AsyncIterator[bytes]:
                yield data

            stored = await engine.ingest(pieces())
            await engine.put_object("bench", f"k/{i}", stored, content_type="application/octet-stream", actor="b")

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    for i in (0, count - 1):  # committed and visible to the process that wrote them (raises NoSuchKey otherwise)
        engine.head_object("bench", f"k/{i}")
    return seconds


def run_local(count: int, concurrency: int) -> dict[str, float]:
    import uvloop

    data_dir = tempfile.mkdtemp(prefix="s4-bench-commit-")
    try:
        async def main() -> dict[str, float]:
            engine = _engine(data_dir)
            try:
                await engine.create_bucket("bench", actor="bench")
                before = _own_cpu()
                seconds = await _puts(engine, count, concurrency)
                used = _own_cpu() - before
            finally:
                engine.close()
            return {"total": used / count * 1e6, "worker": used / count * 1e6, "supervisor": 0.0,
                    "supervisor_system": 0.0, "puts_per_s": count / seconds}

        return uvloop.run(main())
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run_remote(count: int, concurrency: int) -> dict[str, float]:
    import uvloop

    data_dir = tempfile.mkdtemp(prefix="s4-bench-commit-")
    ours, theirs = socket.socketpair()
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's own exit
        ours.close()
        try:
            _serve_supervisor(data_dir, theirs, ready_w)
        finally:
            os._exit(0)
    theirs.close()
    try:
        if os.read(ready_r, 1) != b"r":
            raise RuntimeError("the supervisor process did not start")
        from s4.engine.remote import LoopChannel

        async def main() -> dict[str, float]:
            channel = LoopChannel(ours, name="sequencer")
            from s4.engine import Engine, EngineOptions

            options = EngineOptions(data_dir=data_dir, worker=1)  # type: ignore[arg-type]
            try:
                from s4.engine.remote import ChannelCommitPath
            except ImportError:  # an engine from before the commit port (88cfb94)
                engine = Engine(options, sequencer_channel=channel)  # type: ignore[call-arg]
            else:
                engine = Engine(options, ChannelCommitPath(channel))
            await channel.attach()
            try:
                mine, (user_before, system_before) = _own_cpu(), _child_user_system(child)
                seconds = await _puts(engine, count, concurrency)
                user, system = _child_user_system(child)
                worker, supervisor = _own_cpu() - mine, user - user_before + system - system_before
            finally:
                engine.close()  # closes the channel: the supervisor's loop ends
            return {"total": (worker + supervisor) / count * 1e6, "worker": worker / count * 1e6,
                    "supervisor": supervisor / count * 1e6, "supervisor_system": (system - system_before) / count * 1e6,
                    "puts_per_s": count / seconds}

        return uvloop.run(main())
    finally:
        os.close(ready_r)
        os.close(ready_w)
        os.waitpid(child, 0)
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("remote", "local", "both"), default="both")
    parser.add_argument("--puts", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    modes = ("remote", "local") if args.mode == "both" else (args.mode,)
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:  # alternating, so a change in the machine's load hits both alike
            results[mode].append((run_remote if mode == "remote" else run_local)(args.puts, args.concurrency))
    print(f"| mode | CPU µs per PUT (median of {args.rounds}) | worker | supervisor | of which system | PUT/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"| {mode} | {med['total']:.0f} | {med['worker']:.0f} | {med['supervisor']:.0f} | "
              f"{med['supervisor_system']:.0f} | {med['puts_per_s']:.0f} |")
    return 0


if __name__ == "__main__":
    logging_off = os.environ.get("S4_BENCH_LOG") is None
    if logging_off:
        import logging

        logging.disable(logging.INFO)
    sys.exit(main())
