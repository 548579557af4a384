"""Issue 19: a coordinator that sent a batch to its peers before its own fsync and was killed before that fsync
(cluster/replicator.py ``send_early``). Its journal lacks the events the peers hold. What keeps that safe after the
restart (docs/architecture/replication.md, "Sending before the local fsync"):

- the events are identified by ``(hlc, origin)``: catching up from a peer brings them back to their origin, applied
  as a peer's events, so they converge to visible on every replica (never acknowledged: the client saw the crash);
- the restarted node stamps nothing at or below their HLC once it caught up, even when its wall clock went back
  across the crash (it coordinates nothing before catching up: ``CatchUp.ready``), so no later write of it can be
  mistaken on a peer for the one it already holds.
"""

from __future__ import annotations

from pathlib import Path

from helpers.replicas import Node

from s4.journal import REPLICATED
from s4.journal.hlc import pack


def test_issue19_a_batch_sent_before_a_crash_comes_back_from_a_peer_and_is_never_stamped_again(tmp_path: Path) -> None:
    now = [10_000_000]
    before = Node(tmp_path / "a-before", "a", lambda: now[0])  # the coordinator as it decided, before the kill
    before.run("create_bucket", bucket="b", region="us-east-1")
    sent = before.own_events()  # decided and sent to the peers; never made durable here
    before.close()

    peer = Node(tmp_path / "b", "b", lambda: now[0])
    peer.apply(sent)  # the peer journaled and applied them (it answered; the coordinator died before its fsync)

    now[0] -= 30_000  # the coordinator's wall clock went back across the restart
    after = Node(tmp_path / "a-after", "a", lambda: now[0])  # its journal lacks the batch
    assert after.own_events() == []
    # Had it coordinated before catching up, its next stamp would sort below the events the peer holds:
    assert max(after.clock.last, pack(now[0], 0)) < max(e.hlc for e in sent)
    caught_up = [e for e in peer.journal.read() if e.type in REPLICATED]
    after.apply(caught_up)  # catch-up from the peer, before the node takes writes
    assert {(e.hlc, e.origin) for e in after.own_events()} == {(e.hlc, e.origin) for e in sent}  # back at origin

    after.run("set_bucket_config", bucket="b", kind="cors", value={"rules": 1})
    newest = after.own_events()[-1]
    assert newest.hlc > max(e.hlc for e in sent)  # never stamped again
    peer.apply([newest])
    assert (newest.hlc, "a") in {(e.hlc, e.origin) for e in peer.own_events() + list(peer.journal.read())}
    after.close()
    peer.close()
