"""Instructions per small request, a measure the machine's load does not move (docs/performance.md, "Issue 18's
request path"): the in-process app (as tests/helpers/inprocess_bench.py drives it) runs under valgrind's callgrind
twice, with ``--base`` and ``--base + --extra`` signed requests; the difference / ``--extra`` is the
instructions one request executes (reproducible to about 0.2% for GET and HEAD). Only what runs after the imports
is instrumented (cgregion.c's start request, when a C compiler is at hand): the same difference, several times
faster on a loaded machine. GET and HEAD repeat one request on
one 4 KiB object; PUT stores distinct 4 KiB objects (distinct bytes: no deduplication); DELETE removes distinct
objects that both runs store beforehand (``--base + --extra`` of them, so only the DELETEs differ between the runs).

    python -m tests.helpers.request_instructions [--method GET|HEAD|PUT|DELETE] [--access-log]
        [--python OTHER_VENV_PYTHON]

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


async def _requests(data_dir: Path, method: str, count: int, total: int, access_log: bool) -> None:
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
        if method in ("GET", "HEAD"):
            headers = signer.headers(method, bench.HOST, path)
            for _ in range(count):
                if await bench._call(app, method, path, headers, b"") != 200:
                    raise RuntimeError(f"{method} failed")
            return
        # PUT / DELETE: everything but the measured requests is the same in both runs (``total`` objects' bodies
        # and signatures; for DELETE, the objects stored first).
        paths = [f"/{bench.BUCKET}/o-{i:06d}" for i in range(total)]
        bodies = [os.urandom(4096) for _ in paths]
        puts = [signer.headers("PUT", bench.HOST, p, extra={"content-length": "4096"}) for p in paths]
        deletes = [signer.headers("DELETE", bench.HOST, p) for p in paths]
        if method == "DELETE":
            for p, h, b in zip(paths, puts, bodies, strict=True):
                if await bench._call(app, "PUT", p, h, b) != 200:
                    raise RuntimeError("PUT failed")
            for p, h in zip(paths[:count], deletes[:count], strict=True):
                if await bench._call(app, "DELETE", p, h, b"") != 204:
                    raise RuntimeError("DELETE failed")
        else:
            for p, h, b in zip(paths[:count], puts[:count], bodies[:count], strict=True):
                if await bench._call(app, "PUT", p, h, b) != 200:
                    raise RuntimeError("PUT failed")
    finally:
        engine.close()


def build_cgregion(out_dir: Path, python: str) -> bool:
    """cgregion.c (callgrind's start-instrumentation request, and the regions of request_regions.py) built for
    ``python`` into ``out_dir``; False when there is no compiler or no valgrind/callgrind.h."""
    query = "import sysconfig;print(sysconfig.get_paths()['include']);print(sysconfig.get_config_var('EXT_SUFFIX'))"
    include, suffix = subprocess.run([python, "-c", query], capture_output=True, text=True,
                                     check=True).stdout.split()
    source = Path(__file__).resolve().parent / "cgregion.c"
    try:
        subprocess.run(["cc", "-O1", "-fno-inline", "-shared", "-fPIC", f"-I{include}", str(source), "-o",
                        str(out_dir / f"cgregion{suffix}")], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def _start_instrumentation() -> None:
    """Count from here on (the imports before ran uninstrumented: several times faster under valgrind)."""
    try:
        import cgregion  # type: ignore[import-not-found]  # built by build_cgregion
    except ImportError:
        return
    cgregion.start()


def _collected(python: str, method: str, count: int, total: int, access_log: bool, out: str | None) -> int:
    with tempfile.TemporaryDirectory(prefix="s4-instr-") as tmp:
        late = build_cgregion(Path(tmp), python)
        cmd = ["valgrind", "--tool=callgrind", *(["--instr-atstart=no"] if late else []),
               f"--callgrind-out-file={out or tmp + '/out'}", python, __file__,
               "--run", str(count), "--total", str(total), "--method", method]
        cmd += ["--access-log"] if access_log else []
        env = dict(os.environ, PYTHONHASHSEED="0",
                   PYTHONPATH=os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH")) if p))
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="GET", choices=("GET", "HEAD", "PUT", "DELETE"))
    parser.add_argument("--access-log", action="store_true", help="with the access log on (its lines to stderr)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--base", type=int, default=50)
    parser.add_argument("--extra", type=int, default=1000)
    parser.add_argument("--keep", help="keep the two callgrind outputs as KEEP.base and KEEP.more (callgrind_annotate)")
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # inside valgrind: just the requests
    parser.add_argument("--total", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        _start_instrumentation()
        with tempfile.TemporaryDirectory(prefix="s4-instr-") as tmp:
            asyncio.run(_requests(Path(tmp) / "data", args.method, args.run, args.total, args.access_log))
        return
    total = args.base + args.extra
    keep = (f"{args.keep}.base", f"{args.keep}.more") if args.keep else (None, None)
    base = _collected(args.python, args.method, args.base, total, args.access_log, keep[0])
    more = _collected(args.python, args.method, total, total, args.access_log, keep[1])
    print(f"{args.method}{' (access log on)' if args.access_log else ''}: {(more - base) / args.extra:,.0f} "
          f"instructions per request")


if __name__ == "__main__":
    main()
