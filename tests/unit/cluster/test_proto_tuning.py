"""cluster/proto_tuning.py: betterproto2's field defaults without a warnings context give the same bytes for every
message of the wire module, keep the warnings context for factories that are not builtin types, and are installed
once the cluster's gRPC modules are imported. Fails loudly when the betterproto2 internals it uses move."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import betterproto2
import pytest

import s4.cluster.peers  # noqa: F401 - importing the peer pool installs it
from s4.cluster import proto_tuning
from s4.cluster.wire.s4cluster import v1 as wire


def _messages() -> Iterator[type[betterproto2.Message]]:
    for value in vars(wire).values():
        if isinstance(value, type) and issubclass(value, betterproto2.Message) and value is not betterproto2.Message:
            yield value


def _populated(cls: type[betterproto2.Message]) -> betterproto2.Message:
    """An instance with every plain scalar field set to a non-default value (the rest left at their defaults)."""
    message = cls()
    for name, factory in message._betterproto.default_gen.items():
        value = {int: 7, str: "s", bytes: b"\x00b", bool: True, float: 0.5}.get(factory)
        if value is not None:
            setattr(message, name, value)
    return message


def _encoded(message: betterproto2.Message, method: object) -> bytes:
    saved = betterproto2.Message._get_field_default
    betterproto2.Message._get_field_default = method  # type: ignore[method-assign]
    try:
        return bytes(message)
    finally:
        betterproto2.Message._get_field_default = saved  # type: ignore[method-assign]


def test_issue19_fast_field_defaults_are_installed() -> None:
    assert betterproto2.Message._get_field_default is proto_tuning._get_field_default


@pytest.mark.parametrize("cls", list(_messages()), ids=lambda cls: cls.__name__)
def test_issue19_every_wire_message_encodes_to_the_same_bytes(cls: type[betterproto2.Message]) -> None:
    for message in (cls(), _populated(cls)):
        assert _encoded(message, proto_tuning._get_field_default) == _encoded(
            message, proto_tuning._original_get_field_default)


def test_issue19_most_wire_fields_take_the_plain_path_and_the_others_the_original() -> None:
    factories = [f for cls in _messages() for f in cls()._betterproto.default_gen.values()]
    plain = [f for f in factories if f in proto_tuning.PLAIN_DEFAULTS]
    assert len(plain) > 0.9 * len(factories)  # the point of it: nearly every field skips the warnings context
    others = [cls for cls in _messages()
              if any(f not in proto_tuning.PLAIN_DEFAULTS for f in cls()._betterproto.default_gen.values())]
    assert others, "an enum field's default goes through the original method"
    message = others[0]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the original's context is still there: nothing leaks out of it
        assert _encoded(message, proto_tuning._get_field_default) == bytes(message)


def test_issue19_a_default_factory_that_warns_keeps_the_warnings_context() -> None:
    class Warns(int):
        def __new__(cls) -> Warns:
            warnings.warn("deprecated default", DeprecationWarning, stacklevel=1)
            return super().__new__(cls, 0)

    message = wire.PingRequest()
    gen = message._betterproto.default_gen
    name = next(iter(gen))
    saved = gen[name]
    gen[name] = Warns
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert proto_tuning._get_field_default(message, name) == 0  # no DeprecationWarning escapes
    finally:
        gen[name] = saved
