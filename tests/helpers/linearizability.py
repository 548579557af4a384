"""A linearizability checker for histories of operations on keyed objects (Wing & Gong 1993, with the memoisation
of Lowe, "Testing for linearizability", 2017, as in Porcupine and Knossos).

A history is a list of operations, each with the index of its invocation and of its response in one global event
order (``ret=None``: no response, e.g. the client crashed or gave up: the operation may or may not have taken
effect). The history is linearizable when, for every key separately (linearizability is compositional: Herlihy &
Wing 1990), there is a total order of the completed operations plus any subset of the pending ones that respects
real time (an operation that returned before another was invoked comes first) and in which the sequential model,
run from the initial state, produces every recorded output.

Search: depth-first over "which operation takes effect next", where only operations invoked before the earliest
response among the not-yet-placed completed operations are candidates; (placed set, model state) pairs already
explored are not explored again, which keeps the search small on real histories.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    key: Hashable
    call: int
    ret: int | None
    input: Hashable
    output: Hashable = None
    client: str = ""


Step = Callable[[Hashable, Hashable], tuple[Hashable, Hashable]]  # (state, input) -> (new state, output)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    key: Hashable = None  # the first key whose history is not linearizable
    ops: tuple[Op, ...] = ()
    explored: int = 0

    def __bool__(self) -> bool:
        return self.ok


def check(history: Sequence[Op], init: Hashable, step: Step, *, max_states: int = 2_000_000) -> Verdict:
    """Is ``history`` linearizable with respect to the model ``(init, step)``, key by key?"""
    by_key: dict[Hashable, list[Op]] = defaultdict(list)
    for op in history:
        if op.ret is not None and op.ret <= op.call:
            raise ValueError(f"operation returns before it is invoked: {op}")
        by_key[op.key].append(op)
    explored = 0
    for key, ops in by_key.items():
        ok, n = _check_key(sorted(ops, key=lambda o: o.call), init, step, max_states)
        explored += n
        if not ok:
            return Verdict(False, key, tuple(ops), explored)
    return Verdict(True, explored=explored)


def _check_key(ops: list[Op], init: Hashable, step: Step, max_states: int) -> tuple[bool, int]:
    completed_mask = 0
    for i, op in enumerate(ops):
        if op.ret is not None:
            completed_mask |= 1 << i
    seen: set[tuple[int, Hashable]] = set()
    # Iterative DFS: each frame is (placed mask, state); children are generated when the frame is popped.
    stack: list[tuple[int, Hashable]] = [(0, init)]
    while stack:
        placed, state = stack.pop()
        if placed & completed_mask == completed_mask:
            return True, len(seen)
        if (placed, state) in seen:
            continue
        seen.add((placed, state))
        if len(seen) > max_states:
            raise RuntimeError(f"linearizability search exceeded {max_states} states")
        bound = min(op.ret for i, op in enumerate(ops)
                    if op.ret is not None and not placed & (1 << i))
        children: list[tuple[int, Hashable]] = []
        for i, op in enumerate(ops):
            if op.call > bound:
                break
            if placed & (1 << i):
                continue
            new_state, output = step(state, op.input)
            if op.ret is not None and output != op.output:
                continue
            children.append((placed | (1 << i), new_state))
        stack.extend(reversed(children))  # explore in invocation order
    return False, len(seen)
