"""Last-writer-wins: the order in which replicated versions of one thing supersede each other, and read repair.

A version is identified by ``(hlc, origin)``: the hybrid logical clock stamp of the event that wrote it and the id of
the node that stamped it. Stamps of one node are strictly increasing, so ``(hlc, origin)`` is unique per event and
the order is total: two replicas holding the same pair hold the same event. Applying events in any order and any
number of times converges on the greatest pair. See docs/architecture/replication.md.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

R = TypeVar("R", bound=Hashable)
T = TypeVar("T")


class Version(NamedTuple):
    """``(hlc, origin)``, compared as a tuple: the hlc first, the origin breaks ties between nodes."""

    hlc: int
    origin: str


def supersedes(new: Version, old: Version | None) -> bool:
    """Should ``new`` replace ``old``? Strictly newer only: applying the same event twice changes nothing."""
    return old is None or new > old


@dataclass(frozen=True)
class Newest(Generic[R, T]):
    """The newest answer of a quorum read, who gave it, and the replicas that must be repaired."""

    value: T | None
    version: Version | None
    source: R | None
    stale: tuple[R, ...]


def newest(answers: Mapping[R, T | None], version_of: Callable[[T], Version]) -> Newest[R, T]:
    """Pick the newest of R answers (None: the replica has nothing) and list the replicas whose answer is older
    (or missing) for read repair, in the order the answers were given. Replicas with an equal version are current."""
    best: T | None = None
    best_version: Version | None = None
    source: R | None = None
    for replica, answer in answers.items():
        if answer is None:
            continue
        version = version_of(answer)
        if supersedes(version, best_version):
            best, best_version, source = answer, version, replica
    stale = tuple(replica for replica, answer in answers.items()
                  if best_version is not None and (answer is None or version_of(answer) < best_version))
    return Newest(best, best_version, source, stale)
