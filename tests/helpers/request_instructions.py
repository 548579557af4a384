"""Instructions per small request, a measure the machine's load does not move (docs/performance.md, "Issue 18's
request path"): the in-process app (as tests/helpers/inprocess_bench.py drives it) runs under valgrind's callgrind
twice, with ``--base`` and ``--base + --extra`` identical signed requests; the difference / ``--extra`` is the
instructions one request executes (reproducible to about 0.2%).

    python -m tests.helpers.request_instructions [--method GET|HEAD] [--access-log] [--python OTHER_VENV_PYTHON]

``--python`` measures another build (its virtualenv's interpreter runs this file). Needs ``valgrind`` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inprocess_bench as bench  # noqa: E402 - this file also runs by path under another build's interpreter

from s4.api.app import build_app  # noqa: E402
from s4.api.settings import ApiSettings  # noqa: E402
from s4.engine import Engine, EngineOptions  # noqa: E402
from s4.engine.views.env import Views  # noqa: E402


async def _requests(data_dir: Path, method: str, count: int, access_log: bool) -> None:
    Views.__init__.__kwdefaults__["map_size"] = 1 << 30  # valgrind cannot map the default 1 TiB
    fields = {f.name for f in dataclasses.fields(ApiSettings)}
    extra: dict[str, Any] = {"select_enabled": False} if "select_enabled" in fields else {}  # no preload thread
    if access_log:
        extra["access_log"] = True
    engine = Engine(EngineOptions(data_dir=data_dir))
    try:
        await engine.create_bucket(bench.BUCKET)
        app = build_app(engine, ApiSettings(access_key=bench.ACCESS, secret_key=bench.SECRET, **extra))
        signer = bench.Signer(bench.ACCESS, bench.SECRET)
        path = f"/{bench.BUCKET}/obj-1"
        put = signer.headers("PUT", bench.HOST, path, extra={"content-length": "4096"})
        if await bench._call(app, "PUT", path, put, os.urandom(4096)) != 200:
            raise RuntimeError("PUT failed")
        headers = signer.headers(method, bench.HOST, path)
        for _ in range(count):
            if await bench._call(app, method, path, headers, b"") != 200:
                raise RuntimeError(f"{method} failed")
    finally:
        engine.close()


def _collected(python: str, method: str, count: int, access_log: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="s4-instr-") as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", python, __file__, "--run",
               str(count), "--method", method] + (["--access-log"] if access_log else [])
        env = dict(os.environ, PYTHONHASHSEED="0")
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="GET", choices=("GET", "HEAD"))
    parser.add_argument("--access-log", action="store_true", help="with the access log on (its lines to stderr)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--base", type=int, default=50)
    parser.add_argument("--extra", type=int, default=1000)
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # inside valgrind: just the requests
    args = parser.parse_args(argv)
    if args.run is not None:
        with tempfile.TemporaryDirectory(prefix="s4-instr-") as tmp:
            asyncio.run(_requests(Path(tmp) / "data", args.method, args.run, args.access_log))
        return
    base = _collected(args.python, args.method, args.base, args.access_log)
    more = _collected(args.python, args.method, args.base + args.extra, args.access_log)
    print(f"{args.method}{' (access log on)' if args.access_log else ''}: {(more - base) / args.extra:,.0f} "
          f"instructions per request")


if __name__ == "__main__":
    main()
