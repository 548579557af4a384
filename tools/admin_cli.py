"""``s4-admin``: operator commands against a running S4 endpoint.

    s4-admin rename --endpoint http://127.0.0.1:9000 BUCKET SRC DST [--merge] [--client-token T]

    s4-admin --username root --password ... compaction run [--dry-run] [--threshold F] [--max-volumes N]
    s4-admin --username root --password ... lifecycle run [--dry-run]
    s4-admin --username root --password ... scrubber run
    s4-admin --username root --password ... {compaction,lifecycle,scrubber} status
    s4-admin --username root --password ... kms {create,list,show,rotate,enable,disable} [KEY_ID]

    s4-admin reset-root --data-dir DIR [--root-username NAME] [--password-stdin]   (offline, server stopped)
    s4-admin cluster bootstrap --data-dir DIR --yes                                 (offline, server stopped)
    s4-admin cluster replace --data-dir DIR [--node-id ID]                           (offline, server stopped)

    s4-admin import --source-endpoint URL --source-access-key K --source-secret-key S --source-bucket B
             [--bucket DEST] [--all-versions] [--watch] [--verify]     (online migration, tools/importer.py)

The job commands call the admin API (``/api/admin/<job>/run``) with a JWT from ``/api/admin/login``
(--username/--password, or S4_ADMIN_USERNAME/S4_ADMIN_PASSWORD) and print the run's JSON report.

``rename`` renames one key, or (SRC and DST both ending in '/') a whole prefix, atomically: it calls the same
RenameObject API that boto3's ``rename_object`` uses. Credentials come from --access-key/--secret-key or the
usual AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or S4_ACCESS_KEY_ID/S4_SECRET_ACCESS_KEY) variables.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import boto3
from botocore.exceptions import ClientError

from . import cluster_bootstrap, importer, kms_cli, root_reset

MERGE_HEADER = "x-amz-s4-rename-merge"


def _client(args: argparse.Namespace) -> Any:
    access = args.access_key or os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("S4_ACCESS_KEY_ID")
    secret = args.secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY") or os.environ.get("S4_SECRET_ACCESS_KEY")
    return boto3.client("s3", endpoint_url=args.endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name=args.region)


def rename(args: argparse.Namespace) -> int:
    s3 = _client(args)
    if args.merge:
        def add_merge(request: Any, **_: Any) -> None:
            request.headers[MERGE_HEADER] = "true"

        s3.meta.events.register("before-sign.s3.RenameObject", add_merge)
    params: dict[str, Any] = {"Bucket": args.bucket, "Key": args.dst, "RenameSource": f"/{args.bucket}/{args.src}"}
    if args.client_token:
        params["ClientToken"] = args.client_token
    started = time.perf_counter()
    try:
        s3.rename_object(**params)
    except ClientError as exc:
        err = exc.response["Error"]
        sys.stderr.write(f"s4-admin rename: {err.get('Code')}: {err.get('Message')}\n")
        return 1
    sys.stdout.write(f"renamed s3://{args.bucket}/{args.src} -> s3://{args.bucket}/{args.dst} "
                     f"in {(time.perf_counter() - started) * 1000:.1f} ms\n")
    return 0


def _admin_request(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None,
                   token: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(args.endpoint.rstrip("/") + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    context = ssl._create_unverified_context() if args.no_verify_ssl else None
    with urllib.request.urlopen(req, timeout=args.timeout, context=context) as resp:
        return json.loads(resp.read() or b"null")


def job(args: argparse.Namespace) -> int:
    """Run a background job now (or show its status) through the admin API."""
    username = args.username or os.environ.get("S4_ADMIN_USERNAME") or "root"
    password = args.password or os.environ.get("S4_ADMIN_PASSWORD") or os.environ.get("S4_ROOT_PASSWORD")
    if not password:
        sys.stderr.write("s4-admin: --password (or S4_ADMIN_PASSWORD) is required for job commands\n")
        return 2
    try:
        token = _admin_request(args, "POST", "/api/admin/login", {"username": username, "password": password})["token"]
        if args.action == "status":
            result = _admin_request(args, "GET", f"/api/admin/{args.job}/status", token=token)
        else:
            query = {k: v for k, v in (("dry_run", "true" if getattr(args, "dry_run", False) else None),
                                       ("threshold", getattr(args, "threshold", None)),
                                       ("max_volumes", getattr(args, "max_volumes", None))) if v is not None}
            suffix = "?" + urllib.parse.urlencode(query) if query else ""
            result = _admin_request(args, "POST", f"/api/admin/{args.job}/run{suffix}", token=token)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        sys.stderr.write(f"s4-admin {args.job} {args.action}: HTTP {exc.code}: {detail}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"s4-admin {args.job} {args.action}: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


def _login(args: argparse.Namespace) -> str:
    """A JWT for the admin API (``--username``/``--password`` or S4_ADMIN_USERNAME/S4_ADMIN_PASSWORD)."""
    username = args.username or os.environ.get("S4_ADMIN_USERNAME") or "root"
    password = args.password or os.environ.get("S4_ADMIN_PASSWORD") or os.environ.get("S4_ROOT_PASSWORD")
    if not password:
        raise ValueError("--password (or S4_ADMIN_PASSWORD) is required")
    return str(_admin_request(args, "POST", "/api/admin/login", {"username": username, "password": password})["token"])


def _add_job(sub: Any, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("action", choices=["run", "status"])
    if name in ("compaction", "lifecycle"):
        p.add_argument("--dry-run", action="store_true", help="report what would be done, change nothing")
    if name == "compaction":
        p.add_argument("--threshold", type=float, help="min dead fraction of a volume (0-1)")
        p.add_argument("--max-volumes", type=int, help="compact at most this many volumes")
    p.set_defaults(func=job, job=name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s4-admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", default=os.environ.get("S4_ENDPOINT", "http://127.0.0.1:9000"))
    parser.add_argument("--access-key")
    parser.add_argument("--secret-key")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--username", help="admin API user (job commands)")
    parser.add_argument("--password", help="admin API password (job commands)")
    parser.add_argument("--no-verify-ssl", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for a job run")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("rename", help="rename a key or a whole prefix atomically")
    p.add_argument("bucket")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--merge", action="store_true", help="merge into a destination prefix that holds objects")
    p.add_argument("--client-token", help="idempotency token: retries with the same token succeed once")
    p.set_defaults(func=rename)
    _add_job(sub, "compaction", "compact volumes now (and expire abandoned multipart uploads)")
    _add_job(sub, "lifecycle", "apply the buckets' lifecycle rules now")
    _add_job(sub, "scrubber", "verify every stored blob's checksum now")
    root_reset.add_parser(sub)  # offline, on the data directory (tools/root_reset.py)
    cluster_bootstrap.add_parser(sub)  # offline: s4-admin cluster bootstrap (tools/cluster_bootstrap.py)
    kms_cli.add_parser(sub, _admin_request, _login)  # s4-admin kms ... (tools/kms_cli.py)
    importer.add_parser(sub)  # s4-admin import ... (tools/importer.py, docs/migration.md)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
