"""``s4-admin reset-root``: regain access to a node whose root password is lost (the server must be stopped).

``S4_ROOT_PASSWORD`` seeds the root user once (engine.iam_ops ``seed_root``), so a forgotten password cannot be
reset by restarting with a new one. This command opens the node's engine directly (which needs filesystem access
to the data directory, the operator's proof of authority, and takes its lock: it refuses while a server runs),
makes ``--username`` (default ``$S4_ROOT_USERNAME`` or ``root``) an active SuperUser with the new password through
journaled IAM events, and closes the engine. The password comes from ``--password-stdin`` (first line) or an
interactive prompt, never from the command line. See docs/operations.md ("Lost root password").
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from s4.engine import Engine, EngineOptions
from s4.engine.datadir import DataDirLockedError
from s4.engine.iam import IamError
from s4.journal import CorruptJournalError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reset-root", help="offline: reset the root user's password (server stopped)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env_dir = os.environ.get("S4_DATA_DIR")
    p.add_argument("--data-dir", type=Path, default=Path(env_dir) if env_dir else None,
                   help="the node's data directory (default: $S4_DATA_DIR)")
    p.add_argument("--root-username", default=os.environ.get("S4_ROOT_USERNAME", "root"),
                   help="the user to reset (default: $S4_ROOT_USERNAME or root)")
    p.add_argument("--password-stdin", action="store_true", help="read the new password from standard input")
    p.set_defaults(func=reset_root)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("new root password: ")
    if getpass.getpass("again: ") != first:
        raise IamError(400, "the passwords differ")
    return first


def reset_root(args: argparse.Namespace) -> int:
    if args.data_dir is None or not (args.data_dir / "journal").is_dir():
        sys.stderr.write(f"s4-admin reset-root: {args.data_dir} is not an S4 data directory (pass --data-dir)\n")
        return 2
    try:
        password = _read_password(args)
        engine = Engine(EngineOptions(data_dir=args.data_dir))
        try:
            user = engine.reset_root(args.root_username, password)
        finally:
            engine.close()
    except IamError as exc:
        sys.stderr.write(f"s4-admin reset-root: {exc}\n")
        return 2
    except (DataDirLockedError, CorruptJournalError) as exc:
        sys.stderr.write(f"s4-admin reset-root: {exc}\n")
        return 1
    sys.stdout.write(f"user {user['username']!r} ({user['id']}) is an active SuperUser with the new password; "
                     "its older admin tokens are revoked\n")
    return 0
