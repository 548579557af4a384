"""The query process: one S3 Select / SQL query per process, its memory bounded by the kernel.

DuckDB's ``memory_limit`` covers its buffer manager (aggregates, sorts, joins) but not the strings scalar functions
build (``repeat('x', 7e8)`` allocates 700 MB outside it), nor pyarrow's parsing, nor Python's own buffers. So the
query runs here, in a child of the HTTP process started with ``python -m s4.engine.select.sandbox`` (usually
ahead of its query, as the warm spare: spare.py), with ``RLIMIT_AS`` set when the job arrives to what the process
has mapped then (its libraries loaded, nothing run yet) plus S4_SELECT_MAX_MEMORY plus a fixed headroom for thread
stacks and allocator arenas. Every allocation of the query counts against it, whoever
makes it; past it DuckDB raises OutOfMemory, Python MemoryError, pyarrow ArrowMemoryError, or a C++ thread aborts
the process: each becomes ``ResourceExhausted`` and the HTTP process, which only relays bytes, never grows.

The process reads object bytes through the HTTP process (fetch.py, channel.py), sends encoded result chunks back,
and exits. A timeout or a client that went away is a SIGKILL from the parent; PR_SET_PDEATHSIG kills it if the
parent dies first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import queue
import resource
import signal
import sys
import threading
from typing import IO, Any

from .channel import FRAME_DATA_BYTES, ChannelError, frame, read_frame

#: Address space beyond the query's memory for what the process maps while it runs: stacks of the threads DuckDB
#: and pyarrow start (8 MiB of address space each) and glibc's per-thread malloc arenas (MALLOC_ARENA_MAX=2, up
#: to 64 MiB each). Resident memory stays well below address space, so this bounds RSS from above.
HEADROOM_BYTES = 384 * 1024**2
#: Environment of a query process: few malloc arenas and pyarrow on the system allocator, so that address space
#: (what RLIMIT_AS counts) tracks what the query really uses instead of allocator reservations.
ENV = {"MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system"}
#: Resident memory of a query process before its query (interpreter, DuckDB, pyarrow, the readers): ~105 MiB
#: measured; what every running query costs on top of its S4_SELECT_MAX_MEMORY.
RUNTIME_RSS_BYTES = 128 * 1024**2
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl: nobody will read what we produce
        os._exit(1)


def _mapped_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def limit_memory(memory_bytes: int) -> int:
    """Cap the address space at what is mapped now + the query's memory + HEADROOM_BYTES; returns the cap."""
    cap = _mapped_bytes() + memory_bytes + HEADROOM_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


class Channel:
    """This side of the pipe: frames out under a lock (DuckDB's and pyarrow's threads all read objects), and one
    thread that hands each read's reply to the thread waiting for it."""

    def __init__(self, inp: IO[bytes], out: IO[bytes]) -> None:
        self._inp, self._out = inp, out
        self._write = threading.Lock()
        self._ids = threading.Lock()
        self._pending: dict[int, queue.SimpleQueue[bytes]] = {}
        self._next = 0

    def send(self, message: list[Any]) -> None:
        data = frame(message)
        with self._write:
            self._out.write(data)
            self._out.flush()

    def request(self, message: list[Any]) -> bytes:
        waiter: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        with self._ids:
            rid, self._next = self._next, self._next + 1
            self._pending[rid] = waiter
        self.send([message[0], rid, *message[1:]])
        return waiter.get()

    def serve_replies(self) -> None:
        """Until the parent closes the pipe: then the query is over for it (cancelled), and so is this process."""
        while True:
            try:
                data = read_frame(self._inp)
            except ChannelError:
                data = None
            if data is None or len(data) < 8:
                os._exit(0)
            with self._ids:
                waiter = self._pending.pop(int.from_bytes(data[:8], "big"), None)
            if waiter is not None:
                waiter.put(data[8:])


def run(job: Any, channel: Channel) -> None:
    """Bind, report ready, stream the encoded result; any failure becomes one error message."""
    import pyarrow as pa

    from .fetch import Fetcher
    from .inputs import Meter
    from .parquet import parquet_dataset
    from .runner import connect, translate_error
    from .streams import stream_reader

    pa.set_cpu_count(job.threads)
    pa.set_io_thread_count(job.threads)
    meter = Meter()
    fetcher = Fetcher(channel, meter)

    def send_chunk(data: bytes) -> None:
        for pos in range(0, len(data), FRAME_DATA_BYTES):
            channel.send(["chunk", data[pos:pos + FRAME_DATA_BYTES], meter.processed])

    try:
        conn = connect(job.memory_bytes, job.threads)
        for name, (spec, objects) in job.tables.items():
            if spec.kind == "parquet":
                conn.register(name, parquet_dataset(fetcher, objects))
            else:
                conn.register(name, stream_reader(fetcher, objects, spec))
        relation = conn.sql(job.sql)  # binds: unknown columns etc. fail before the 200
        channel.send(["ready"])
        fetch = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch  # DuckDB < 1.4
        reader = fetch(8192)
        head = job.encoder.begin(reader.schema)  # goes out with the first rows (or the end)
        for batch in reader:
            data = job.encoder.batch(batch)
            if data:
                send_chunk(head + data)
                head = b""
        send_chunk(head + job.encoder.end())
        channel.send(["done", meter.processed])
    except BaseException as exc:  # noqa: BLE001 - every failure becomes an S3 error for the client
        error = _own_error(exc) or translate_error(exc, job.memory_bytes)
        channel.send(["error", error.code.name, error.message])
    finally:
        fetcher.close()


def _own_error(exc: BaseException) -> Any:
    """Our own S3Errors raised inside pyarrow/DuckDB callbacks, found along the exception's causes."""
    from ..errors import S3Error
    cause: BaseException | None = exc
    for _ in range(32):
        if cause is None:
            return None
        if isinstance(cause, S3Error):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def main() -> None:
    _die_with_parent()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # the pipe carries frames only
    from . import parquet, runner, streams  # noqa: F401 - loaded before "hello" and the memory limit
    channel = Channel(inp, out)
    channel.send(["hello"])
    data = read_frame(inp)
    if data is None:
        os._exit(0)
    channel.send(["job"])  # received: the parent now knows this process outlived its wait as a spare
    job = pickle.loads(data)  # noqa: S301 - written by our parent, the HTTP process
    limit_memory(job.memory_bytes)
    threading.Thread(target=channel.serve_replies, name="s4-query-replies", daemon=True).start()
    run(job, channel)
    out.flush()
    os._exit(0)  # no interpreter teardown: pyarrow threads may still wait at a gate


if __name__ == "__main__":
    main()
