"""Listings over R replicas (the engine's ``ListingPort``, engine/ports.py): ListObjects V1/V2, ListObjectVersions
and ListMultipartUploads merge this node's replica with R - 1 peers' page by page (cluster/listing_merge.py), so a
key written through another node moments ago is listed whichever node serves the listing (W + R > N).

The replicas are this node (its views, read in-process through ``LocalReads``) and the first R - 1 peers not held
``dead``; when one of them fails mid-listing the listing starts over with the next set of peers, and when no set
answers, 503 (``ReadQuorumError``). Runs in any process of the node: an HTTP worker uses its own ``PeerPool``
(the node's identity and key) and reads this node's views directly, so a listing never crosses the worker channel.

Before a merged listing is answered it is settled as a key read is (docs/architecture/replication.md, "Listings over
writes in flight"): the replicas the merge found lacking something are repaired by catch-up (this node from the
answering peers, stale peers from this node: ``settle.settle_listing``, the node's ``QuorumKeyReads``, in an HTTP
worker through the supervisor), and a listing answered while any write is still in flight here covers first
(``LeaseGrants.cover``). Otherwise a listing could show a write in flight that a later listing or GET through
another node does not show, or hide by a removal in flight what a later one shows again. When the replicas agree
and nothing is unsettled on this node (the read gate's count), that costs one memory read.

Why any write in flight, not only the walked keys' (robust19 asked the gate about the bucket's slot and each walked
key's): a removal leaves nothing for the merge to walk. The removal of a key's last version takes its leaf away on
the replicas that applied it, and an abort names no key (its one slot is the upload's), so a listing through a node
that applied the removal does not show the entry and asked about no slot of it, while a leaseholder that has not
applied it yet listed it again locally (tests/unit/cluster/test_listing_versions_uploads_in_flight.py). The gate
counts in-flight events by hashed slot, with no way to find the ones inside a listing's range.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from grpclib.exceptions import GRPCError, StreamTerminatedError

from s4.engine.model import ListPage, UploadListPage, VersionListPage
from s4.engine.read_gate import ReadGate
from s4.engine.views.env import Views

from . import listing_merge
from .key_reads import ReadQuorumError
from .liveness import DEAD
from .reads import OBJECTS, UPLOADS, LocalReads, ReadsService, WireSource

log = logging.getLogger("s4.cluster")
T = TypeVar("T")
MergedKeys = listing_merge.MergedKeys[str]
FAILURES = (GRPCError, StreamTerminatedError, OSError, TimeoutError, ConnectionError)


class ListingSettle(Protocol):
    """cluster/key_reads.py ``QuorumKeyReads.settle_listing`` (engine/remote ``RemoteKeyReads`` in a worker)."""

    async def settle_listing(self, bucket: str, answered: Sequence[str], stale: Sequence[str],
                             in_flight: bool) -> None: ...


class QuorumListings:
    def __init__(self, node_id: str, peers: Sequence[str], read_quorum: int, views: Views,
                 stub_of: Callable[[str], Any], *, state: Callable[[str], str] = lambda _peer: "alive",
                 timeout_s: float = 10.0, settle: ListingSettle | None = None, gate: ReadGate | None = None) -> None:
        """``settle`` and ``gate``: repair and cover before answering (None: a listing answers as merged)."""
        self.node_id, self.peers, self.read_quorum = node_id, tuple(peers), read_quorum
        self.local = LocalReads(ReadsService(views), node_id)
        self.stub_of, self._state, self.timeout_s = stub_of, state, timeout_s
        self.settle, self.gate = settle, gate

    def settle_with(self, settle: ListingSettle | None, gate: ReadGate | None) -> None:
        """Wire the repair and the read gate once the node has them (tools/server.py)."""
        self.settle, self.gate = settle, gate

    def _stub(self, replica: str) -> Any:
        return self.local if replica == self.node_id else self.stub_of(replica)

    async def _merged(self, kind: str, bucket: str, prefix: str,
                      run: Callable[[WireSource, list[str]], Awaitable[tuple[T, MergedKeys]]]) -> T:
        need = self.read_quorum - 1
        ordered = [p for p in self.peers if self._state(p) != DEAD] + [p for p in self.peers if self._state(p) == DEAD]
        failures: list[str] = []
        for chosen in itertools.combinations(ordered, need):  # live peers first
            source = WireSource(self._stub, bucket, prefix, kind=kind, timeout=self.timeout_s)
            try:
                page, stream = await run(source, [self.node_id, *chosen])
            except FAILURES as exc:
                failures.append(f"{','.join(chosen)}: {type(exc).__name__}: {exc}")
                log.info("listing %s/%s from %s failed (%s); trying other replicas", bucket, prefix, chosen, exc)
            else:
                await self._settled(bucket, chosen, stream)
                return page
        raise ReadQuorumError("no read quorum for the listing: " + "; ".join(failures or ["no live peers"]))

    async def _settled(self, bucket: str, answered: Sequence[str], stream: MergedKeys) -> None:
        """Repair what the merge found stale and cover any write in flight here, before the answer."""
        if self.settle is None:
            return
        # anything in flight here: a removal in flight hides an entry without a key walked (module docstring)
        in_flight = self.gate is not None and self.gate.unsettled != 0
        if stream.stale or in_flight:
            await self.settle.settle_listing(bucket, list(answered), sorted(stream.stale), in_flight)

    async def list_objects(self, bucket: str, prefix: str, delimiter: str, start_after: str,
                           max_keys: int) -> ListPage:
        async def run(source: WireSource, replicas: list[str]) -> tuple[ListPage, MergedKeys]:
            return await listing_merge.list_objects(source, replicas, bucket, prefix, delimiter, start_after,
                                                    max_keys)

        return await self._merged(OBJECTS, bucket, prefix, run)

    async def list_versions(self, bucket: str, prefix: str, delimiter: str, key_marker: str,
                            version_id_marker: str, max_keys: int) -> VersionListPage:
        async def run(source: WireSource, replicas: list[str]) -> tuple[VersionListPage, MergedKeys]:
            return await listing_merge.list_versions(source, replicas, bucket, prefix, delimiter, key_marker,
                                                     version_id_marker, max_keys)

        return await self._merged(OBJECTS, bucket, prefix, run)

    async def list_uploads(self, bucket: str, prefix: str, delimiter: str, key_marker: str,
                           upload_id_marker: str, max_uploads: int) -> UploadListPage:
        async def run(source: WireSource, replicas: list[str]) -> tuple[UploadListPage, MergedKeys]:
            return await listing_merge.list_uploads(source, replicas, bucket, prefix, delimiter, key_marker,
                                                    upload_id_marker, max_uploads)

        return await self._merged(UPLOADS, bucket, prefix, run)
