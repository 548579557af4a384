"""betterproto2's per-field default check without a warnings context: a cost every inter-node message paid.

``Message.__bytes__`` compares every field with its default (``Message._get_field_default``) to leave defaults off
the wire, and betterproto2 0.10 builds each default inside ``warnings.catch_warnings()`` plus a
``filterwarnings("ignore", DeprecationWarning)`` (for deprecated fields' defaults). That context costs more than the
rest of the field's encoding: of the ~25 us it takes to encode one ``ApplyEventsStreamRequest`` (three fields; four
of them per replicated 4 KiB PUT at c=1 over the pool, plus every Ping, SWIM message and reply), about half.

``fast_field_defaults`` replaces the method with one that calls the default factory directly when it is a builtin
type (``int``, ``str``, ``bytes``, ``bool``, ``float``, ``list``, ``dict``, ``NoneType``: 149 of the 152 fields of
cluster/proto/s4_cluster.proto), which can warn of nothing, and keeps the original, warnings context included, for
any other factory (an enum's default, a message's). The value is the same factory's, so the bytes on the wire are
the same (tests/unit/cluster/test_proto_tuning.py encodes every message of the wire module both ways).

It reaches into betterproto2's internals (``_betterproto.default_gen``); the test fails if they move.
"""

from __future__ import annotations

from typing import Any

import betterproto2

_original_get_field_default = betterproto2.Message._get_field_default
#: Default factories that cannot warn (builtin types called without arguments).
PLAIN_DEFAULTS: frozenset[Any] = frozenset({int, str, bytes, bool, float, list, dict, type(None)})


def _get_field_default(self: betterproto2.Message, field_name: str) -> Any:
    """``Message._get_field_default`` without the warnings context for a builtin default factory."""
    factory = self._betterproto.default_gen[field_name]  # type: ignore[arg-type]  # betterproto2 classproperty
    if factory in PLAIN_DEFAULTS:
        return factory()
    return _original_get_field_default(self, field_name)


def fast_field_defaults() -> None:
    """Install ``_get_field_default`` on betterproto2's ``Message`` (idempotent)."""
    betterproto2.Message._get_field_default = _get_field_default  # type: ignore[method-assign]


fast_field_defaults()
