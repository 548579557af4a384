"""``s4-admin``: operator commands against a running S4 endpoint.

    s4-admin rename --endpoint http://127.0.0.1:9000 BUCKET SRC DST [--merge] [--client-token T]

``rename`` renames one key, or (SRC and DST both ending in '/') a whole prefix, atomically: it calls the same
RenameObject API that boto3's ``rename_object`` uses. Credentials come from --access-key/--secret-key or the
usual AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or S4_ACCESS_KEY_ID/S4_SECRET_ACCESS_KEY) variables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import boto3
from botocore.exceptions import ClientError

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s4-admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", default=os.environ.get("S4_ENDPOINT", "http://127.0.0.1:9000"))
    parser.add_argument("--access-key")
    parser.add_argument("--secret-key")
    parser.add_argument("--region", default="us-east-1")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("rename", help="rename a key or a whole prefix atomically")
    p.add_argument("bucket")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--merge", action="store_true", help="merge into a destination prefix that holds objects")
    p.add_argument("--client-token", help="idempotency token: retries with the same token succeed once")
    p.set_defaults(func=rename)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
