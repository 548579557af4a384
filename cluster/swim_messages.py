"""SWIM's messages and the precedence of membership updates (docs/architecture/membership.md).

Every message is one flat dataclass of strings, ints and a list of updates, so the gRPC wiring maps it to a proto
message field by field (no pickles, no nesting beyond ``repeated Update``). One kind field says what it is:

    ping       sender -> target: "are you there?"            (seq, target_id: the node the sender means)
    ack        target -> prober, or relay -> prober: "it is"  (seq of the probe, target_id: the node proven alive)
    ping_req   prober -> relay: "probe target_id at target_addr for me"
    nack       relay -> prober: "I asked and heard nothing"  (Lifeguard: tells the prober the relay is working)
    join       joiner -> seed: "add me"
    join_reply seed -> joiner: every member record the seed holds (in ``updates``)
    leave      leaving node -> each member: its own ``dead`` at its current incarnation (in ``updates``)

Every message carries the sender's id, address and incarnation (an implicit ``alive`` about the sender, which only
the sender can issue) and piggybacks recent updates (the dissemination component).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"
STATES = (ALIVE, SUSPECT, DEAD)

PING, ACK, PING_REQ, NACK, JOIN, JOIN_REPLY = "ping", "ack", "ping_req", "nack", "join", "join_reply"
LEAVE = "leave"
KINDS = (PING, ACK, PING_REQ, NACK, JOIN, JOIN_REPLY, LEAVE)

#: Fixed per-update cost in the size estimate: the state, the incarnation (up to 10 bytes as a varint) and the
#: field tags of a proto encoding, rounded up.
UPDATE_OVERHEAD = 24


@dataclass(frozen=True)
class Update:
    """One membership fact: ``node_id`` at ``address`` is ``state`` at ``incarnation``.

    ``origin`` is the node that concluded it (for ``suspect`` and ``dead``; the suspected node's own id for
    ``alive``): independent suspicions of one member come from different origins and shorten its suspicion timeout.
    """

    state: str
    node_id: str
    address: str
    incarnation: int
    origin: str = ""

    def size(self) -> int:
        """An upper estimate of its encoded size in bytes (for the piggyback budget)."""
        return UPDATE_OVERHEAD + len(self.node_id.encode()) + len(self.address.encode()) + len(self.origin.encode())


@dataclass(frozen=True)
class Message:
    """One SWIM message (any kind); ``seq`` ties acks and nacks to the probe they answer."""

    kind: str
    cluster: str
    sender_id: str
    sender_addr: str
    sender_inc: int
    seq: int = 0
    target_id: str = ""
    target_addr: str = ""
    updates: tuple[Update, ...] = field(default_factory=tuple)


_RANK = {ALIVE: 0, SUSPECT: 1, DEAD: 2}


def overrides(new: Update, state: str, incarnation: int) -> bool:
    """Does ``new`` replace a record (``state``, ``incarnation``) of the same member? SWIM's precedence:

    - alive(i) overrides alive(j), suspect(j) and dead(j) iff i > j (only the member itself raises i, so a higher
      alive is the member refuting, or coming back after a restart);
    - suspect(i) overrides alive(j) iff i >= j, suspect(j) and dead(j) iff i > j (a suspicion of a newer life);
    - dead(i) overrides alive(j) and suspect(j) iff i >= j, dead(j) iff i > j.

    That is exactly "(incarnation, rank) is greater", with alive < suspect < dead: a total order on records. So a
    member's record at any node is the greatest update about it that node received, whatever the order and however
    often they arrived, and two nodes that heard the same updates hold the same record (the property tests check
    it). For one incarnation a verdict wins over the member's word; only the member can leave a verdict behind, by
    raising its incarnation.
    """
    return (new.incarnation, _RANK[new.state]) > (incarnation, _RANK[state])
