"""``sitecustomize`` for tests/helpers/server_regions.py, copied as ``sitecustomize.py`` into a temporary directory
on the server's PYTHONPATH. In a worker process (``--worker-id``) it wraps each function named in ``CG_TARGETS``
(``module:Qual.name``, comma separated) in cgregion's ``region<i>`` as soon as its module is imported, so
callgrind's inclusive cost of ``region<i>`` is the cost of that function's calls (a coroutine step by step, as
request_regions.py does in process). In every process it cuts the LMDB map to 1 GiB: valgrind cannot map the
default 1 TiB. Without ``CG_TARGETS`` it does nothing.
"""

from __future__ import annotations

import functools
import importlib.abc
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

TARGETS = [t for t in os.environ.get("CG_TARGETS", "").split(",") if t]
VIEWS = "s4.engine.views.env"


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

    def close(self) -> Any:
        return self.coro.close()


def _wrap(fn: Callable[..., Any], region: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def steps(*args: Any, **kwargs: Any) -> Any:
            return await _Steps(fn(*args, **kwargs), region)
        return steps

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        return region(functools.partial(fn, *args, **kwargs)) if kwargs else region(fn, *args)
    return plain


def _apply(module: ModuleType, targets: Sequence[tuple[int, str]], regions: Any) -> None:
    if module.__name__ == VIEWS:
        module.Views.__init__.__kwdefaults__["map_size"] = 1 << 30
    for index, qual in targets:
        owner: Any = module
        *path, name = qual.split(".")
        try:
            for part in path:
                owner = getattr(owner, part)
            original = inspect.getattr_static(owner, name)
        except AttributeError:
            sys.stderr.write(f"region {index}: {module.__name__}:{qual} missing\n")
            continue
        fn = original.__func__ if isinstance(original, staticmethod) else original
        wrapped = _wrap(fn, getattr(regions, f"region{index}"))
        setattr(owner, name, staticmethod(wrapped) if isinstance(original, staticmethod) else wrapped)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: lets the other finders find a target's module and applies ``_apply`` once it ran."""

    def __init__(self, by_module: dict[str, list[tuple[int, str]]], regions: Any) -> None:
        self.by_module, self.regions = by_module, regions

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.by_module:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                run = spec.loader.exec_module

                def exec_module(module: ModuleType, run: Any = run) -> None:
                    run(module)
                    _apply(module, self.by_module[name], self.regions)

                spec.loader.exec_module = exec_module  # type: ignore[method-assign]
                return spec
        return None


def install() -> None:
    import cgregion  # type: ignore[import-not-found]  # built next to this file by server_regions.py

    by_module: dict[str, list[tuple[int, str]]] = {VIEWS: []}
    if "--worker-id" in sys.argv:
        for index, target in enumerate(TARGETS):
            module, qual = target.split(":")
            by_module.setdefault(module, []).append((index, qual))
    sys.meta_path.insert(0, _Finder(by_module, cgregion))


if TARGETS:
    install()
