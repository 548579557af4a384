"""``s4-admin cluster bootstrap``: empty a cluster node's data so it rejoins its pool afresh (server stopped).

A node away longer than S4_MAX_REJOIN_DOWNTIME_DAYS, whose peers moved on without it, must not rejoin with its old
data: tombstones it lacks may be gone everywhere, so its old objects could come back (docs/architecture/tombstones.md,
"Rejoining"). This command takes the data directory's lock (it refuses beside a running server), then removes, in
this order, the views, the journal, the volumes and the cluster feed store (catch-up cursors, hints and the rejoin
records with the refusal), each with a directory fsync. The feed store goes last: until it is gone the node still
knows it is refused, so a crash in the middle leaves a node that refuses to start, never one that serves part of its
old data under a new life; running the command again finishes the job.

Kept: the node id, ``iam.key``, generated credentials, the configuration and the name register's acceptor state
(``cluster/cas.lmdb``: a Paxos acceptor must never forget a promise). At its next start the node has a new data
life, counts toward no quorum until it caught up with its peers' journals from their first event, and is refilled
by catch-up (and anti-entropy). docs/operations.md, "Bootstrap a long-absent node".
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from s4.cluster.cas_restore import REASON
from s4.cluster.cas_store import CasStore
from s4.cluster.cas_store import store_path as cas_store_path
from s4.cluster.feed_store import FEED_DIR
from s4.engine.datadir import NODE_ID_NAME, DataDirLock, DataDirLockedError, NodeIdMismatchError, node_id
from s4.engine.read_gate import gate_path
from s4.journal.segment import fsync_dir

#: What goes, in this order (relative to the data directory); the feed store last (module docstring).
WIPED = ("views", "views.rebuild", "views.old", "journal", "volumes", str(FEED_DIR))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = sub.add_parser("cluster", help="offline cluster operations on a node's data directory")
    commands = cluster.add_subparsers(dest="cluster_command", required=True)
    p = commands.add_parser("bootstrap", help="offline: empty this node's data so it rejoins afresh (server stopped)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env_dir = os.environ.get("S4_DATA_DIR")
    p.add_argument("--data-dir", type=Path, default=Path(env_dir) if env_dir else None,
                   help="the node's data directory (default: $S4_DATA_DIR)")
    p.add_argument("--yes", action="store_true", help="really remove the node's objects, journal and views")
    p.set_defaults(func=bootstrap)
    r = commands.add_parser("replace", help="offline: mark a replacement node's data directory (its disk was lost) "
                            "so its register acceptor restores its state before it votes",
                            description=REPLACE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--data-dir", type=Path, default=Path(env_dir) if env_dir else None,
                   help="the replacement's data directory (default: $S4_DATA_DIR); created if absent")
    r.add_argument("--node-id", default=os.environ.get("S4_NODE_ID") or None,
                   help="the dead node's id (default: $S4_NODE_ID; required unless the directory has its node_id)")
    r.set_defaults(func=replace)


REPLACE_DOC = """``s4-admin cluster replace``: make a replacement machine's data directory safe to start as a dead node.

A node whose data directory was lost comes back with the same id and no register state: as a CASPaxos acceptor it
would have forgotten its promises, and voting at once could let two proposers both win one bucket name. This
command (server stopped) writes the node id if the directory has none and marks the acceptor store
``replacing``: at start the node's acceptor refuses to vote until it has read the register state of every other
node of its pool (cluster/cas_restore.py); catch-up and anti-entropy refill the rest of the directory.
docs/operations.md, "Replace a dead node".
"""


def replace(args: argparse.Namespace) -> int:
    data_dir: Path | None = args.data_dir
    if data_dir is None:
        sys.stderr.write("s4-admin cluster replace: pass --data-dir (or set S4_DATA_DIR)\n")
        return 2
    if not (data_dir / NODE_ID_NAME).is_file() and not args.node_id:
        sys.stderr.write(f"s4-admin cluster replace: {data_dir} has no node_id: pass --node-id with the dead node's "
                         "id\n")
        return 2
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        lock = DataDirLock.acquire(data_dir)
    except DataDirLockedError as exc:
        sys.stderr.write(f"s4-admin cluster replace: {exc}; stop the server first\n")
        return 1
    try:
        try:
            node = node_id(data_dir, args.node_id)
        except NodeIdMismatchError as exc:
            sys.stderr.write(f"s4-admin cluster replace: {exc}\n")
            return 2
        store = CasStore(cas_store_path(data_dir))
        try:
            store.set_replacing(REASON)
        finally:
            store.close()
    finally:
        lock.release()
    sys.stdout.write(f"marked {data_dir} as the replacement of node {node}: start the server with the dead node's "
                     "configuration; its acceptor votes once every other node of its pool has answered (cluster "
                     "health, \"cas\")\n")
    return 0


def bootstrap(args: argparse.Namespace) -> int:
    data_dir: Path | None = args.data_dir
    if data_dir is None or not (data_dir / "node_id").is_file():
        sys.stderr.write(f"s4-admin cluster bootstrap: {data_dir} is not an S4 node's data directory "
                         "(pass --data-dir)\n")
        return 2
    present = [name for name in WIPED if (data_dir / name).exists()]
    if not args.yes:
        sys.stderr.write(f"s4-admin cluster bootstrap: this removes {', '.join(present) or 'nothing'} in {data_dir} "
                         "(every object, the journal and the views of this node; its peers refill it). Run again "
                         "with --yes to do it.\n")
        return 2
    try:
        lock = DataDirLock.acquire(data_dir)
    except DataDirLockedError as exc:
        sys.stderr.write(f"s4-admin cluster bootstrap: {exc}; stop the server first\n")
        return 1
    try:
        for name in WIPED:
            path = data_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            fsync_dir(path.parent)
        gate_path(data_dir).unlink(missing_ok=True)
    finally:
        lock.release()
    sys.stdout.write(f"bootstrapped {data_dir}: removed {', '.join(present) or 'nothing'}; start the server: it "
                     "rejoins with a new data life and catches up from its peers\n")
    return 0
