"""Instructions per request spent inside chosen Python functions (inclusive), for attributing a difference between
two builds by function (docs/performance.md): each target ``module:Qual.name`` is wrapped so that its calls run
inside a distinct C function ``region<i>`` of a tiny extension (cgregion.c, built here with the interpreter's
headers), and callgrind's inclusive cost of ``region<i>`` is the cost of the target's calls. An ``async def``
target's coroutine steps are wrapped, so time the coroutine spends suspended is not counted. Runs the requests of
request_instructions twice (``--base``, ``--base + --extra``; instrumented only from the engine's start on, the
imports before it run uncounted and several times faster); prints the difference / ``--extra`` per target.

    python -m tests.helpers.request_regions --method GET [--access-log] [--python OTHER] TARGET...

A target missing from a build is reported as such. Nested targets each count their own inclusive cost. Needs
valgrind (and its callgrind.h), callgrind_annotate and a C compiler on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import request_instructions as ri  # noqa: E402 - this file also runs by path under another build's interpreter


class _Steps:
    """Awaits a coroutine with each of its steps run inside ``region``."""

    def __init__(self, coro: Any, region: Callable[..., Any]) -> None:
        self.coro, self.region = coro, region

    def __await__(self) -> _Steps:
        return self

    def __iter__(self) -> _Steps:
        return self

    def __next__(self) -> Any:
        return self.region(self.coro.send, None)

    def send(self, value: Any) -> Any:
        return self.region(self.coro.send, value)

    def throw(self, *exc: Any) -> Any:
        return self.region(self.coro.throw, *exc)


def _wrap(fn: Callable[..., Any], region: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def steps(*args: Any, **kwargs: Any) -> Any:
            return await _Steps(fn(*args, **kwargs), region)
        return steps

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        return region(functools.partial(fn, *args, **kwargs))
    return plain


def _install(targets: list[str]) -> None:
    """Wrap every target found; a wrapped function replaces the original in its module or class, and in every
    already-imported module that imported it by name."""
    import cgregion  # type: ignore[import-not-found]  # built by _build into a directory on PYTHONPATH

    for index, target in enumerate(targets):
        module_name, qual = target.split(":")
        try:
            owner: Any = importlib.import_module(module_name)
            *path, name = qual.split(".")
            for part in path:
                owner = getattr(owner, part)
            original = inspect.getattr_static(owner, name)
        except (ImportError, AttributeError):
            print(f"region {index}: {target} missing", file=sys.stderr)
            continue
        fn = original.__func__ if isinstance(original, staticmethod) else original
        wrapped = _wrap(fn, getattr(cgregion, f"region{index}"))
        setattr(owner, name, staticmethod(wrapped) if isinstance(original, staticmethod) else wrapped)
        if not path:
            for mod in list(sys.modules.values()):
                if getattr(mod, "__dict__", None) is not None and mod.__dict__.get(name) is fn:
                    setattr(mod, name, wrapped)


def _inclusive(out: str) -> dict[int, int]:
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out], capture_output=True,
                          text=True, check=True).stdout
    found: dict[int, int] = {}
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+)\s.*\bregion(\d+)\b", line)
        if match:
            found[int(match.group(2))] = found.get(int(match.group(2)), 0) + int(match.group(1).replace(",", ""))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="GET", choices=("GET", "HEAD", "PUT", "DELETE"))
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--base", type=int, default=20)
    parser.add_argument("--extra", type=int, default=200)
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("targets", nargs="*")
    args = parser.parse_args(argv)
    if args.run is not None:
        _install(args.targets)
        import cgregion

        cgregion.start()
        with tempfile.TemporaryDirectory(prefix="s4-regions-") as tmp:
            asyncio.run(ri._requests(Path(tmp) / "data", args.method, args.run, args.total, args.access_log))
        return
    total = args.base + args.extra
    with tempfile.TemporaryDirectory(prefix="s4-regions-") as tmp:
        if not ri.build_cgregion(Path(tmp), args.python):
            raise SystemExit("request_regions needs a C compiler and valgrind/callgrind.h")
        env = dict(os.environ, PYTHONHASHSEED="0",
                   PYTHONPATH=os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH")) if p))
        counts = []
        for count in (args.base, total):
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/out{count}",
                   args.python, __file__,
                   "--run", str(count), "--total", str(total), "--method", args.method, *args.targets]
            cmd += ["--access-log"] if args.access_log else []
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=1800)
            for line in done.stderr.splitlines():
                if " missing" in line and line.startswith("region"):
                    print(line)
            counts.append(_inclusive(f"{tmp}/out{count}"))
    for index, target in enumerate(args.targets):
        per = (counts[1].get(index, 0) - counts[0].get(index, 0)) / args.extra
        print(f"{per:>12,.0f}  {target}")


if __name__ == "__main__":
    main()
