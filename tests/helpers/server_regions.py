"""Instructions per request inside chosen Python functions of a REAL server's HTTP workers, for one or more builds.

    python -m tests.helpers.server_regions [--python OTHER_PYTHON ...] [--requests 200] [--phases GET,HEAD]
        [--concurrency 1,64] [--skip-this] [TARGET ...]

Each build's server runs as the benchmark starts it (``python -m s4.tools.server``, default worker count, access
log and metrics on), but under ``valgrind --tool=callgrind --trace-children=yes --instr-atstart=no``: supervisor
and workers run uninstrumented (a few times slower) until ``callgrind_control -i on`` turns the workers on after
start-up. Per phase: 30 requests of warm-up, ``callgrind_control -z`` (zero), N requests at c=1 over one keep-alive
connection (4 KiB PUTs of new keys, GETs and HEADs of the warm-up's objects, DELETEs of the PUTs), then ``-d``
(dump). With ``--concurrency 1,64`` each phase runs once per concurrency, its N requests sent by C tasks over C
connections (opened in the warm-up, which runs at the highest concurrency): under callgrind the worker is slow
enough that C requests wait at every turn of its loop, so C=64 shows what a busy loop amortises over the requests
one wake-up finds. ``--skip-this`` measures only the ``--python`` builds (one valgrind server at a time on a shared
machine: one run per build). ``server_regions_site.py``, installed as the workers' ``sitecustomize``, wraps each TARGET
(``module:Qual.name``; default: the request path's layers, from uvicorn to the engine) in a distinct C function of
cgregion.c, so callgrind's inclusive cost of that function is the target's (request_regions.py's technique, in
process there). Printed per phase: the worker's event loop (``uv_run``) per request, and each target's inclusive
instructions per request; a target missing from a build prints 0. Each wrapped call adds ~1,500 instructions to
itself and to every wrapped caller. Two runs of one build agree within 1-2% (GET, HEAD) and 2-4% (PUT, DELETE):
timers and the access log's flushes fall differently into N requests.

An ``async def`` target is wrapped step by step; do not name an ASGI entry point (``BodyGate.__call__``,
falcon's ``App.__call__``): uvicorn then takes the app for an ASGI2 one. Needs valgrind (with callgrind.h),
callgrind_control, callgrind_annotate and a C compiler.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import request_instructions as ri  # noqa: E402 - a sibling helper (builds cgregion.c)
from server_cpu import _tree  # noqa: E402

from s4.tools.bench.client import Client  # noqa: E402
from s4.tools.bench.servers import Keys, Server, free_ports, wait_ready  # noqa: E402
from s4.tools.bench.workloads import unique_body  # noqa: E402

HTTP = "uvicorn.protocols.http.httptools_impl"
DEFAULT_TARGETS = [
    f"{HTTP}:HttpToolsProtocol.data_received", "s4.api.http_protocol:LimitedHttpProtocol.data_received",
    f"{HTTP}:RequestResponseCycle.run_asgi", f"{HTTP}:RequestResponseCycle.send",
    "s4.api.app:S3Service.__call__", "s4.api.app:S3Service._handle", "s4.api.app:S3Service.authenticate",
    "s4.api.s3.access:AccessControl.authorize", "s4.api.request_metrics:RequestMetrics.observe",
    "s4.api.access_log:LineBuffer.add", "s4.api.access_log:LineBuffer.flush",
    "s4.engine.engine:Engine.open_version", "s4.engine.engine:Engine.open_version_guarded",
    "s4.engine.engine:Engine.read_small", "s4.engine.remote.client:RemoteSequencer.execute",
    "s4.api.s3.objects:get_object", "s4.api.s3.objects:head_object", "s4.api.s3.objects:put_object",
    "s4.api.s3.objects:delete_object", "falcon.asgi.request:Request.__init__",
]
WARM = 30


def _start(label: str, python: str, work: Path, site: Path, keys: Keys, targets: list[str],
           extra: tuple[str, ...] = ()) -> Server:
    (port,) = free_ports(1)
    data = work / f"{label}-data"
    data.mkdir()
    env = dict(os.environ, S4_BIND=f"127.0.0.1:{port}", S4_DATA_DIR=str(data), S4_ACCESS_KEY_ID=keys.access,
               S4_SECRET_ACCESS_KEY=keys.secret, PYTHONHASHSEED="0", CG_TARGETS=",".join(targets),
               PYTHONPATH=os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--instr-atstart=no", *extra,
           f"--callgrind-out-file={work}/cg-{label}.%p", python, "-m", "s4.tools.server"]
    with open(work / f"{label}.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=work)
    return Server(label, f"http://127.0.0.1:{port}", proc, log=work / f"{label}.log")


def _workers(root: int) -> list[int]:
    found = []
    for pid in _tree(root):
        try:
            if b"--worker-id" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, text=True, timeout=300)


async def _phase(c: Client, phase: str, n: int, prefix: str, body: bytes, concurrency: int = 1) -> None:
    counter = iter(range(n))

    async def one(i: int) -> None:
        if phase == "PUT":
            await c.request("PUT", f"/regions/{prefix}/{i}", body=unique_body(body, i))
        elif phase == "DELETE":
            await c.request("DELETE", f"/regions/{prefix}/{i}")
        else:
            await c.request(phase, f"/regions/warm/{i % WARM}")

    async def task() -> None:
        for i in counter:  # shared: n requests in all, ``concurrency`` in flight
            try:
                await one(i)
            except ConnectionError:  # a pooled connection idle past the keep-alive timeout while callgrind dumped
                await one(i)  # (every request here is idempotent): once more on a new connection

    await asyncio.gather(*(task() for _ in range(concurrency)))


def _label(phase: str, concurrency: int) -> str:
    return phase if concurrency == 1 else f"{phase}-c{concurrency}"


def _inclusive(path: Path) -> tuple[int, dict[int, int]]:
    """(the event loop's inclusive instructions, {region index: inclusive instructions}) of one dump."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
                          capture_output=True, text=True, check=True).stdout
    loop, regions = 0, {}
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+)\s.*\bregion(\d+)\b", line)
        if match:
            regions[int(match.group(2))] = regions.get(int(match.group(2)), 0) + int(match.group(1).replace(",", ""))
        elif not loop and re.search(r":uv_run \[", line):
            loop = int(line.split()[0].replace(",", ""))
    return loop, regions


async def _measure(opts: argparse.Namespace, work: Path) -> dict[tuple[str, str], tuple[int, dict[int, int]]]:
    keys = Keys(secrets.token_hex(8).upper(), secrets.token_hex(16))
    builds = {"this": sys.executable, **{f"other{i + 1}": p for i, p in enumerate(opts.python)}}
    if opts.skip_this:
        del builds["this"]
    servers = {}
    for label, python in builds.items():
        site = work / f"site-{label}"
        site.mkdir()
        if not ri.build_cgregion(site, python):
            raise SystemExit("server_regions needs a C compiler and valgrind/callgrind.h")
        shutil.copy(Path(__file__).with_name("server_regions_site.py"), site / "sitecustomize.py")
        servers[label] = _start(label, python, work, site, keys, opts.targets, tuple(opts.valgrind_arg))
    results: dict[tuple[str, str], tuple[int, dict[int, int]]] = {}
    try:
        for server in servers.values():
            await wait_ready(server, keys, "regions", 900)
        body = os.urandom(4096)
        for label, server in servers.items():
            assert server.proc is not None
            workers = _workers(server.proc.pid)
            for pid in workers:
                _control("-i", "on", str(pid))
            async with Client(server.endpoint, keys.access, keys.secret) as c:
                for phase in ("PUT", "GET", "HEAD"):
                    await _phase(c, phase, WARM, "warm", body)
                most = max(opts.concurrency)
                if most > 1:  # every connection opened before anything is measured
                    await _phase(c, "GET", 2 * most, "warm", body, most)
                for conc in opts.concurrency:
                    for phase in opts.phases:
                        time.sleep(0.5)
                        for pid in workers:
                            _control("-z", str(pid))
                        await _phase(c, phase, opts.requests, f"m{conc}", body, conc)
                        time.sleep(0.5)
                        for pid in workers:
                            _control("-d", _label(phase, conc), str(pid))
            time.sleep(2)
            for conc in opts.concurrency:
                for phase in opts.phases:
                    loop, regions = 0, {}
                    for dump in work.glob(f"cg-{label}.*.*"):
                        head = dump.read_text(errors="replace")[:3000]
                        if "--worker-id" not in head or f"desc: Trigger: dump {_label(phase, conc)}\n" not in head:
                            continue
                        got_loop, got = _inclusive(dump)
                        loop += got_loop
                        for index, value in got.items():
                            regions[index] = regions.get(index, 0) + value
                    results[(label, _label(phase, conc))] = (loop, regions)
    finally:
        for server in servers.values():
            assert server.proc is not None
            try:
                os.killpg(server.proc.pid, signal.SIGTERM)
                server.proc.wait(300)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(server.proc.pid, signal.SIGKILL)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", default=[], help="another build's interpreter (its venv)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--phases", default="GET,HEAD,PUT,DELETE")
    parser.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[1],
                        help="comma list: each phase at each (C connections, C requests in flight)")
    parser.add_argument("--skip-this", action="store_true", help="measure only the --python builds")
    parser.add_argument("--keep", type=Path, help="copy the workers' callgrind dumps into this folder")
    parser.add_argument("--valgrind-arg", action="append", default=[],
                        help="one more callgrind option, e.g. --valgrind-arg=--cache-sim=yes (read the kept dumps)")
    parser.add_argument("targets", nargs="*")
    opts = parser.parse_args(argv)
    opts.targets = opts.targets or DEFAULT_TARGETS
    opts.phases = [p for p in opts.phases.split(",") if p]
    if "DELETE" in opts.phases and "PUT" not in opts.phases[: opts.phases.index("DELETE")]:
        parser.error("DELETE removes what a PUT phase before it stored: list PUT before DELETE")
    work = Path(tempfile.mkdtemp(prefix="s4-server-regions-"))
    try:
        results = asyncio.run(_measure(opts, work))
        if opts.keep is not None:
            opts.keep.mkdir(parents=True, exist_ok=True)
            for dump in work.glob("cg-*.*.*"):
                if "--worker-id" in dump.read_text(errors="replace")[:3000]:
                    shutil.copy(dump, opts.keep / dump.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    labels = sorted({label for label, _ in results}, key=lambda s: (s != "this", s))
    n = opts.requests
    for phase in [_label(p, conc) for conc in opts.concurrency for p in opts.phases]:
        print(f"\n{phase}, instructions per request in the HTTP workers ({' / '.join(labels)})")
        print(f"  {'event loop (uv_run), the whole request':72}" +
              "".join(f"{results[(lb, phase)][0] / n:>12,.0f}" for lb in labels))
        for index, target in enumerate(opts.targets):
            values = [results[(lb, phase)][1].get(index, 0) / n for lb in labels]
            if max(values) > 0:
                print(f"  {target:72}" + "".join(f"{v:>12,.0f}" for v in values))


if __name__ == "__main__":
    main()
