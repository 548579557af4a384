"""``s4-admin kms ...``: the built-in KMS through the admin API (engine/kms.py, docs/operations.md "Encryption").

    s4-admin --username root --password ... kms create KEY_ID
    s4-admin --username root --password ... kms list
    s4-admin --username root --password ... kms show KEY_ID
    s4-admin --username root --password ... kms rotate KEY_ID
    s4-admin --username root --password ... kms disable KEY_ID      (its objects are unreadable until enabled)
    s4-admin --username root --password ... kms enable KEY_ID
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
from collections.abc import Callable
from typing import Any

Request = Callable[..., Any]  # admin_cli._admin_request(args, method, path, body=None, token=None)
Login = Callable[[argparse.Namespace], str]


def add_parser(sub: Any, request: Request, login: Login) -> None:
    p = sub.add_parser("kms", help="create, list, rotate, enable and disable keys of the built-in KMS")
    p.add_argument("action", choices=["create", "list", "show", "rotate", "enable", "disable"])
    p.add_argument("key_id", nargs="?")
    p.set_defaults(func=lambda args: run(args, request, login))


def run(args: argparse.Namespace, request: Request, login: Login) -> int:
    if args.action != "list" and not args.key_id:
        sys.stderr.write(f"s4-admin kms {args.action}: KEY_ID is required\n")
        return 2
    path = "/api/admin/kms/keys"
    one = f"{path}/{urllib.parse.quote(args.key_id or '', safe='')}"
    try:
        token = login(args)
        if args.action == "create":
            result = request(args, "POST", path, {"key_id": args.key_id}, token=token)
        elif args.action == "list":
            result = request(args, "GET", path, token=token)
        elif args.action == "show":
            result = request(args, "GET", one, token=token)
        elif args.action == "rotate":
            result = request(args, "POST", f"{one}/rotate", {}, token=token)
        else:
            result = request(args, "PUT", one, {"enabled": args.action == "enable"}, token=token)
    except urllib.error.HTTPError as exc:
        sys.stderr.write(f"s4-admin kms {args.action}: HTTP {exc.code}: {exc.read().decode(errors='replace')}\n")
        return 1
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"s4-admin kms {args.action}: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0
