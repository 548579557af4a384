"""The sequencer-process side: answers the requests of HTTP worker processes, on the supervisor's event loop.

Each worker's socket is read by the loop (``WorkerLink``, an asyncio protocol). The command frames of every
worker go into one pending list, and one callback per loop iteration runs all of them as one group-committed
batch right there on the loop thread (``Sequencer.commit_now``), then writes each worker's replies with one write.
A command crosses no thread between its frame's arrival and its reply. While a batch is being made durable the
next batch's frames wait in the kernel's socket buffers: that wait is the group commit's accumulation. Nothing else
on this loop is latency-critical (it watches the worker processes and schedules the background jobs, whose
own commands run on the sequencer's thread, under the same lock).

A cluster node's supervisor is different: its loop also serves and calls the other nodes (gRPC), so there the
batch is made durable on a thread of its own (one batch at a time, in order; the next one accumulates meanwhile)
and the loop stays free to take the peers' calls and answers while the journal syncs.

Background-job requests (admin runs, status), login-throttle requests and the cluster's health document (the
heartbeat runs in this process) are answered on the loop too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
from collections.abc import Coroutine, Sequence
from typing import Any

from .. import timeline
from ..errors import ServiceUnavailableError
from ..login_throttle import LoginThrottle
from ..model import BlobLocation
from ..ports import (
    BlobPushPort,
    BlobRepairPort,
    BucketNamesPort,
    ClusterStatus,
    IamFeedPort,
    KeyReadPort,
    NameClaim,
    ReplicationPort,
)
from ..sequencer import Command, Committed, Recorded, Sequencer
from .pending import ChannelClosedError
from .wire import FrameBuffer, encode_error, encode_frame

log = logging.getLogger(__name__)
JOB_METHODS = frozenset({"lifecycle", "compaction", "scrubber", "status", "scrub_status"})
NAMES_METHODS = frozenset({"create", "mark_deleting", "finish_delete", "abort_delete", "pool_of",
                           "list_buckets"})
MAX_BATCH = 4096


class SequencerService:
    def __init__(self, sequencer: Sequencer, jobs: Any, loop: asyncio.AbstractEventLoop,
                 login_throttle: LoginThrottle, cluster: ClusterStatus | None = None,
                 replication: ReplicationPort | None = None, key_reads: KeyReadPort | None = None,
                 names: BucketNamesPort | None = None) -> None:
        self.sequencer = sequencer
        self.key_reads = key_reads  # a cluster node's quorum reads, run here for the workers
        self.names = names  # a cluster node's bucket-name register (the workers' CreateBucket/DeleteBucket ask it)
        self.replication = replication  # a cluster node's: a batch is answered once the write quorum holds it
        self.jobs = jobs
        self.cluster = cluster  # the supervisor's (engine/ports.py), for the workers' health API
        self.loop = loop
        self.login_throttle = login_throttle
        self._pending: list[tuple[Command, WorkerLink, int]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._committing = False  # a cluster node: a batch is being made durable on the committer thread
        self._committer: concurrent.futures.ThreadPoolExecutor | None = None
        self.blob_repair: BlobRepairPort | None = None  # a cluster node's healer (cluster/scrub_heal.py), for reads
        self.blob_push: BlobPushPort | None = None  # a cluster node's chunk pusher (cluster/blob_push.py), for ingest
        self.iam_feed: IamFeedPort | None = None  # several pools: the registry pool's IAM (cluster/iam_feed.py)

    async def attach(self, sock: socket.socket, name: str) -> WorkerLink:
        """Serve the worker at the other end of ``sock`` (one end of its socketpair)."""
        sock.setblocking(False)
        link = WorkerLink(self, name)
        await self.loop.connect_accepted_socket(lambda: _Protocol(link), sock=sock)
        return link

    def handle(self, link: WorkerLink, message: dict[str, Any]) -> None:
        request_id = message["id"]
        op = message.get("op")
        if op == "cmd":
            blobs = message.get("blobs")
            command = Command(message["name"], message["args"], message.get("actor", ""),
                              tuple(message.get("volumes") or ()),
                              tuple((digest, data) for digest, data in blobs) if blobs else ())
            self._pending.append((command, link, request_id))
            if len(self._pending) == 1:
                self.loop.call_soon(self._commit_pending)
        elif op == "job" and message.get("method") in JOB_METHODS:
            self._job_call(link, request_id, message["method"], message.get("kwargs") or {})
        elif op == "cluster" and message.get("method") in ("health", "repair_status"):
            self._cluster_health(link, request_id, message["method"])
        elif op == "cluster" and message.get("method") == "drain_node" and self.cluster is not None:
            self._answer(link, request_id, self.cluster.drain_node(message["node_id"], bool(message["on"])))
        elif op == "settle" and self.key_reads is not None:  # a worker's quorum read (engine/ports.py KeyReadPort)
            self._settle(link, request_id, self.key_reads, message)
        elif op == "repair" and self.blob_repair is not None:  # a worker's read met a bad blob: heal it here
            loc = BlobLocation(message["hash"], message["volume"], message["offset"], message["size"])
            self._answer(link, request_id, self.blob_repair.repair(loc, message.get("problem", ""),
                                                                   message.get("cause", "read")))
        elif op == "push" and self.blob_push is not None:  # a worker stored a large body's chunk: copy it to peers
            self.blob_push.stored(BlobLocation(message["hash"], message["volume"], message["offset"], message["size"]))
            link.reply(request_id, None)
        elif op == "iam_refresh" and self.iam_feed is not None:  # a worker met an access key it does not know
            self._answer(link, request_id, self.iam_feed.refresh())
        elif op == "names" and message.get("method") in NAMES_METHODS:
            self._names_call(link, request_id, message["method"], message.get("kwargs") or {})
        elif op == "throttle" and message.get("action") in LoginThrottle.ACTIONS:
            try:  # a few dict operations under a lock: answered right here
                getattr(self.login_throttle, message["action"])(message["username"], message["client"])
            except Exception as exc:  # noqa: BLE001 - ThrottledError is the answer, not a failure
                link.reply(request_id, error=exc)
            else:
                link.reply(request_id, None)
        else:
            link.reply(request_id, error=ValueError(f"unknown request {op!r}"))

    def _commit_pending(self) -> None:
        """Everything the workers sent since the last batch, as one batch (blocks the loop until durable; a cluster
        node's batch is made durable on the committer thread instead, one at a time)."""
        while self._pending and not self._committing:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            if self.replication is None:
                self._reply(batch, self.sequencer.commit_now([command for command, _, _ in batch]))
            else:
                self._commit_replicated(batch, self.replication)

    def _commit_replicated(self, batch: list[tuple[Command, WorkerLink, int]], replication: ReplicationPort) -> None:
        """A cluster node: commit the batch here (on the committer thread), then answer it once the write quorum
        holds its events (one replication call for the whole batch; engine/replicated_commit.py does the same per
        command)."""
        try:
            replication.admit()
        except ServiceUnavailableError as exc:
            self._reply(batch, [exc] * len(batch))
            return
        offer = getattr(replication, "offer_blobs", None)  # (cluster/replicator.py: sent inline from memory)
        if offer is not None:
            for command, _, _ in batch:
                if command.blobs:
                    offer(command.blobs)
        if self._committer is None:
            self._committer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="s4-committer")
        self._committing = True
        if timeline.enabled:
            timeline.mark("commit.begin", str(len(batch)))
        future = self._committer.submit(self.sequencer.commit_now, [Recorded(command) for command, _, _ in batch])
        future.add_done_callback(lambda done: self._back_on_loop(self._committed, batch, replication, done))

    def _back_on_loop(self, callback: Any, *args: Any) -> None:
        """From the committer thread: ``callback(*args)`` on the loop, in the loop's next iteration (one wake-up;
        ``run_in_executor``'s future took a second iteration to run its done callbacks). Dropped when the loop is
        closed (the process is stopping: the workers' links are gone with it)."""
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            log.info("a committed batch finished after the loop closed; its workers are gone")

    def _committed(self, batch: list[tuple[Command, WorkerLink, int]], replication: ReplicationPort,
                   done: concurrent.futures.Future[Sequence[Any]]) -> None:
        self._committing = False
        if self._pending:
            self.loop.call_soon(self._commit_pending)
        if done.cancelled() or done.exception() is not None:
            error = ChannelClosedError("the sequencer process is stopping") if done.cancelled() else done.exception()
            self._reply(batch, [error] * len(batch))
            return
        results = done.result()
        if timeline.enabled:
            timeline.mark("commit.durable")
        events = [event for result in results if isinstance(result, Committed) for event in result.events]
        answers = [result.result if isinstance(result, Committed) else result for result in results]
        if not any(isinstance(result, Committed) for result in results):
            self._reply(batch, answers)  # every command failed in its decider: nothing to wait for
            return
        # Also with no events: a command that changed nothing may rest on this node's writes that did not reach
        # the quorum yet (cluster/replicator.py); replicate() holds it back until they have.
        task = self.loop.create_task(replication.replicate(events))
        self._tasks.add(task)

        def answer(done: asyncio.Task[Any]) -> None:
            if timeline.enabled:
                timeline.mark("commit.replicated")
            self._tasks.discard(done)
            error = ChannelClosedError("the sequencer process is stopping") if done.cancelled() else done.exception()
            if error is not None:
                waited = [isinstance(result, Committed) for result in results]
                self._reply(batch, [error if w else a for w, a in zip(waited, answers, strict=True)])
            else:
                self._reply(batch, answers)

        task.add_done_callback(answer)

    @staticmethod
    def _reply(batch: list[tuple[Command, WorkerLink, int]], results: Sequence[Any]) -> None:
        links: set[WorkerLink] = set()
        for (_, link, request_id), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                link.reply(request_id, error=result, flush=False)
            else:
                link.reply(request_id, result, flush=False)
            links.add(link)
        for link in links:
            link.flush()

    def _names_call(self, link: WorkerLink, request_id: int, method: str, kwargs: dict[str, Any]) -> None:
        """One step of a worker's CreateBucket/DeleteBucket in the register (engine/bucket_names.py), which this
        process runs (its cluster node serves the acceptor and reaches the peers)."""
        if self.names is None:
            link.reply(request_id, error=ValueError("this node has no bucket-name register"))
            return

        async def step() -> Any:
            assert self.names is not None
            claim: Any = await getattr(self.names, method)(**kwargs)
            return claim.to_record() if isinstance(claim, NameClaim) else claim  # pool_of, list_buckets: as they are

        self._answer_task(link, request_id, self.loop.create_task(step()))

    def _answer_task(self, link: WorkerLink, request_id: int, task: asyncio.Task[Any]) -> None:
        """Reply with the task's result or error once it is done."""
        self._tasks.add(task)

        def answer(done: asyncio.Task[Any]) -> None:
            self._tasks.discard(done)
            if done.cancelled():
                link.reply(request_id, error=ChannelClosedError("the sequencer process is stopping"))
            elif (error := done.exception()) is not None:
                link.reply(request_id, error=error)
            else:
                link.reply(request_id, done.result())

        task.add_done_callback(answer)

    def _cluster_health(self, link: WorkerLink, request_id: int, method: str = "health") -> None:
        if self.cluster is None:
            link.reply(request_id, error=ValueError("this node has no cluster status"))
            return
        self._answer(link, request_id, self.cluster.health() if method == "health" else self.cluster.repair_status())

    def _settle(self, link: WorkerLink, request_id: int, reads: KeyReadPort, message: dict[str, Any]) -> None:
        kind, bucket, ident = message.get("kind"), message["bucket"], message["ident"]
        if kind == "key":
            self._answer(link, request_id, reads.settle_key(bucket, ident))
        elif kind == "upload":
            self._answer(link, request_id, reads.settle_upload(bucket, ident))
        elif kind == "bucket":
            self._answer(link, request_id, reads.settle_bucket(bucket))
        elif kind == "listing" and hasattr(reads, "settle_listing"):  # cluster/listings.py, a worker's listing
            self._answer(link, request_id, reads.settle_listing(bucket, message["answered"], message["stale"],
                                                                bool(message["in_flight"])))
        else:
            link.reply(request_id, error=ValueError(f"unknown settle kind {kind!r}"))

    def _answer(self, link: WorkerLink, request_id: int, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` on the loop and reply with its result or error."""
        task = self.loop.create_task(work)
        self._tasks.add(task)

        def answer(done: asyncio.Task[Any]) -> None:
            self._tasks.discard(done)
            if done.cancelled():
                link.reply(request_id, error=ChannelClosedError("the sequencer process is stopping"))
            elif (error := done.exception()) is not None:
                link.reply(request_id, error=error)
            else:
                link.reply(request_id, done.result())

        task.add_done_callback(answer)

    def _job_call(self, link: WorkerLink, request_id: int, method: str, kwargs: dict[str, Any]) -> None:
        if method == "status":
            try:
                link.reply(request_id, self.jobs.status(**kwargs))
            except Exception as exc:  # noqa: BLE001 - answered to the caller
                link.reply(request_id, error=exc)
            return
        self._answer(link, request_id, getattr(self.jobs, method)(**kwargs))


class WorkerLink:
    """One worker's socket, on the supervisor's loop: decodes its requests, writes the replies."""

    def __init__(self, service: SequencerService, name: str) -> None:
        self.name = name
        self.service = service
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._frames = FrameBuffer()
        self._outgoing: list[bytes] = []

    def reply(self, request_id: int, value: Any = None, error: BaseException | None = None, *,
              flush: bool = True) -> None:
        """Queue the reply to request ``request_id``; written now, or with the next ``flush``."""
        if self.closed:
            return
        message = {"id": request_id, "err": encode_error(error)} if error is not None else {"id": request_id,
                                                                                           "ok": value}
        try:
            frame = encode_frame(message)
        except Exception as exc:  # noqa: BLE001 - an unsendable result is this request's failure only
            frame = encode_frame({"id": request_id, "err": encode_error(exc)})
        self._outgoing.append(frame)
        if flush:
            self.flush()

    def flush(self) -> None:
        frames, self._outgoing = self._outgoing, []
        if frames and not self.closed and self._transport is not None:
            self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def close(self) -> None:
        """Stop serving this worker (it is gone or being stopped); replies still owed to it are dropped."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            if self.closed:
                return
            if "op" in message:
                self.service.handle(self, message)
            else:
                log.warning("%s: unexpected reply %r ignored", self.name, message.get("id"))


class _Protocol(asyncio.Protocol):
    def __init__(self, link: WorkerLink) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.link._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.link._received(data)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("%s: undecodable frame: %s; closing", self.link.name, exc)
            self.link.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.closed = True
