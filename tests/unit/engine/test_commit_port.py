"""The commit port's contract (engine/ports.py), run against every implementation the engine can be given.

``local``: LocalCommitPath, this process owns the journal. ``channel``: ChannelCommitPath, the engine of an HTTP
worker: a real supervisor-side engine and SequencerService run in a child process (as tools/supervisor.py runs
them) and the engine under test commits over a socketpair to it. The engine code is the same in both; what it
sees must be too: answers after the change is visible, the same errors, the same node, "cannot commit now" as 503.
A replicated pool (cluster/) will join the parametrization.
"""

from __future__ import annotations

import concurrent.futures
import os
import select
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from helpers.engine_io import get, put

from s4.engine import Engine, EngineOptions
from s4.engine.errors import ErrorCode, S3Error, ServiceUnavailableError
from s4.engine.jobs.service import for_engine
from s4.engine.local_commit import LocalCommitPath
from s4.engine.login_throttle import ThrottledError
from s4.engine.ports import CommitPath
from s4.engine.remote import ChannelCommitPath, LoopChannel
from s4.engine.sequencer import Command

pytestmark = pytest.mark.anyio
DEADLINE_S = 60.0
HERE = Path(__file__).resolve().parent
GUESSER, GUESSER_ADDRESS = "guesser", "10.0.0.1"


async def prime_owner(engine: Engine) -> None:
    """What the node's owner did before the engine under test started: one lifecycle run, and enough failed logins
    of one user to lock it out (the owner's own state, which a worker must see through its path)."""
    for _ in range(engine.login_throttle.free + 1):
        try:
            engine.login_throttle.attempt(GUESSER, GUESSER_ADDRESS)
        except ThrottledError:
            break
    await for_engine(engine).lifecycle(dry_run=True)


SUPERVISOR = textwrap.dedent("""
    import asyncio, socket, sys, time
    from s4.engine import Engine, EngineOptions
    from s4.engine.jobs.service import for_engine
    from s4.engine.local_commit import LocalCommitPath
    from s4.engine.remote import SequencerService
    from test_commit_port import prime_owner

    async def main() -> None:
        path = LocalCommitPath()
        engine = Engine(EngineOptions(sys.argv[1]), path)
        try:
            await prime_owner(engine)
            service = SequencerService(path.sequencer, for_engine(engine), asyncio.get_running_loop(),
                                       engine.login_throttle)
            link = await service.attach(socket.socket(fileno=int(sys.argv[2])), "worker-1")
            print("ready", engine.node_id, flush=True)
            deadline = time.monotonic() + float(sys.argv[3])
            while not link.closed and time.monotonic() < deadline:  # until the worker's engine closes its end
                await asyncio.sleep(0.02)
        finally:
            engine.close()

    asyncio.run(main())
""")


class Node:
    """An engine built on one commit path, and the node id its data directory's owner reported."""

    def __init__(self, engine: Engine, owner_node_id: str) -> None:
        self.engine = engine
        self.owner_node_id = owner_node_id


async def _local(data_dir: Path) -> AsyncIterator[Node]:
    path = LocalCommitPath()
    engine = Engine(EngineOptions(data_dir), path)
    try:
        await prime_owner(engine)
        yield Node(engine, engine.node_id)
    finally:
        _close(engine)


async def _channel(data_dir: Path) -> AsyncIterator[Node]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(data_dir), str(theirs.fileno()), str(DEADLINE_S)],
                            pass_fds=(theirs.fileno(),), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parents[1])])})
    theirs.close()
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], DEADLINE_S)
        line = proc.stdout.readline().decode().split() if readable else []
        assert line[:1] == ["ready"], proc.stderr.read().decode() if proc.stderr else "no output"
        channel = LoopChannel(ours, name="sequencer")
        path: CommitPath = ChannelCommitPath(channel)
        engine = Engine(EngineOptions(data_dir, worker=1), path)
        await channel.attach()
        try:
            yield Node(engine, line[1])
        finally:
            _close(engine)
    finally:
        ours.close()
        try:
            proc.wait(DEADLINE_S)
        finally:
            proc.kill()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def _close(engine: Engine) -> None:
    try:
        engine.close()
    except Exception:  # noqa: BLE001 - a test closed the port already
        pass


@pytest.fixture(params=["local", "channel"])
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    make: Callable[[Path], AsyncIterator[Node]] = {"local": _local, "channel": _channel}[request.param]
    async for built in make(tmp_path / "data"):
        yield built


async def test_an_answered_command_is_visible_to_this_process(node: Node) -> None:
    engine = node.engine
    await engine.create_bucket("port", actor="t")
    assert [b.name for b in engine.list_buckets()] == ["port"]  # read straight from this process's views
    version = await put(engine, "port", "k", b"bytes through the port")
    assert engine.head_object("port", "k").etag == version.etag
    assert await get(engine, "port", "k") == b"bytes through the port"


async def test_a_refused_command_raises_the_same_s3_error_and_changes_nothing(node: Node) -> None:
    engine = node.engine
    with pytest.raises(S3Error) as err:
        await engine.delete_bucket("missing", actor="t")
    assert err.value.code is ErrorCode.NO_SUCH_BUCKET and err.value.resource == "missing"
    await engine.create_bucket("once", actor="t")
    with pytest.raises(S3Error) as err:
        await engine.create_bucket("once", actor="t")
    assert err.value.code is ErrorCode.BUCKET_ALREADY_OWNED_BY_YOU
    assert [b.name for b in engine.list_buckets()] == ["once"]


async def test_submit_from_another_thread_and_execute_sync_off_the_loop(node: Node) -> None:
    port = node.engine.sequencer

    def from_threads() -> list[Any]:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [port.submit(Command("create_bucket", {"bucket": f"t{n}", "region": "us-east-1"}))
                       for n in range(8)]
            done = [f.result(DEADLINE_S) for f in futures]
            done.append(pool.submit(port.execute_sync, Command("create_bucket", {"bucket": "sync",
                                                                                "region": "us-east-1"})).result())
        return done

    await anyio.to_thread.run_sync(from_threads)
    assert sorted(b.name for b in node.engine.list_buckets()) == ["sync", *sorted(f"t{n}" for n in range(8))]
    batches, commands = port.stats
    assert isinstance(batches, int) and isinstance(commands, int)


async def test_the_engine_belongs_to_the_data_directorys_node(node: Node) -> None:
    assert node.engine.node_id == node.owner_node_id
    assert node.engine.node_id == (Path(node.engine.options.data_dir) / "node_id").read_text().strip()


async def test_the_background_jobs_and_the_login_throttle_are_the_nodes(node: Node) -> None:
    """Whichever process the engine is in, it sees the node owner's jobs (their runs) and login throttle."""
    status = await anyio.to_thread.run_sync(for_engine(node.engine).status, "lifecycle")
    assert status["worker"] == "lifecycle" and status["runs"] >= 1
    with pytest.raises(ThrottledError):
        await node.engine.throttle_login("attempt", GUESSER, GUESSER_ADDRESS)
    await node.engine.throttle_login("attempt", "nobody", GUESSER_ADDRESS)  # another user is not locked out


async def test_a_closed_port_refuses_with_service_unavailable(node: Node) -> None:
    node.engine.sequencer.close()
    with pytest.raises(ServiceUnavailableError):
        await node.engine.create_bucket("late", actor="t")
    with pytest.raises(ServiceUnavailableError):
        node.engine.sequencer.submit(Command("create_bucket", {"bucket": "late", "region": "us-east-1"})).result(
            DEADLINE_S)
