"""cluster/h2_tuning.py: hyperframe's frame repr without hexlifying the whole payload (the same string for any
input, and installed once the cluster's gRPC modules are imported), and the blob connection advertising 1 MiB DATA
frames (a real connection on 127.0.0.1). Fails loudly when the grpclib / hyperframe internals it uses move."""

from __future__ import annotations

import asyncio

import hyperframe.frame
import pytest
from grpclib.client import Channel
from helpers.cluster_pool import pool_configs
from hypothesis import given
from hypothesis import strategies as st

import s4.cluster.grpc_server  # noqa: F401 - importing the server installs the repr
from s4.cluster import h2_tuning
from s4.cluster.grpc_server import ClusterServer
from s4.cluster.peers import PeerPool


@given(st.one_of(st.none(), st.binary(max_size=64)))
def test_issue19_fast_frame_repr_prints_what_hyperframe_printed(data: bytes | None) -> None:
    assert h2_tuning._raw_data_repr(data) == h2_tuning._original_raw_data_repr(data)


def test_issue19_fast_frame_repr_is_installed_and_used_by_data_frames() -> None:
    assert hyperframe.frame._raw_data_repr is h2_tuning._raw_data_repr
    frame = hyperframe.frame.DataFrame(1, data=b"\x01" * (1 << 20))
    assert "<hex:01010101010101010101...>" in repr(frame)


def test_issue19_grpclib_internals_the_bulk_channel_uses_are_there() -> None:
    assert callable(getattr(Channel, "_protocol_factory", None))


class Local:
    def status(self) -> tuple[int, int]:
        return 1, 7

    def peer_seen(self, node_id: str, hlc: int, journal_seq: int, http_addr: str = "") -> None:
        pass


def test_issue19_blob_connection_takes_large_frames_and_the_small_calls_keep_the_default() -> None:
    one, two = pool_configs(("127.0.0.1", "127.0.0.2"), replication_factor=2, write_quorum=1, read_quorum=1)

    async def main() -> None:
        server = ClusterServer(two, Local())
        await server.start()
        try:
            async with PeerPool(one, timeout_s=5.0) as pool:
                await pool.bulk_stub("node-2").ping(pool_ping(one))
                await pool.stub("node-2").ping(pool_ping(one))
                bulk = pool._channels["node-2#bulk"]._protocol.connection._connection
                small = pool._channels["node-2"]._protocol.connection._connection
                assert bulk.local_settings.max_frame_size == h2_tuning.BULK_MAX_FRAME
                assert small.local_settings.max_frame_size == 16384
                assert type(bulk) is h2_tuning.LeanH2Connection and type(small) is not h2_tuning.LeanH2Connection
        finally:
            await server.stop()

    asyncio.run(main())


def pool_ping(config):  # type: ignore[no-untyped-def]
    from s4.cluster.wire.s4cluster.v1 import PingRequest

    return PingRequest(node_id=config.node_id, cluster=config.cluster_name, pool=config.pool_name)


def test_issue19_the_grpc_server_takes_large_frames_so_a_pushed_blob_arrives_in_1_mib_frames() -> None:
    """A peer pushing a chunk (PutBlob, cluster/blob_push.py) sends what this server's SETTINGS allow: with h2's
    default 16 KiB, a 4 MiB chunk was 256 DATA frames through h2 at both ends (the push cost twice the GetBlob)."""
    one, two = pool_configs(("127.0.0.1", "127.0.0.2"), replication_factor=2, write_quorum=1, read_quorum=1)

    async def main() -> None:
        server = ClusterServer(two, Local())
        await server.start()
        try:
            async with PeerPool(one, timeout_s=5.0) as pool:
                await pool.bulk_stub("node-2").ping(pool_ping(one))
                await pool.stub("node-2").ping(pool_ping(one))
                accepted = list(server._server._protocols)  # type: ignore[union-attr]
                assert len(accepted) == 2
                for protocol in accepted:
                    assert protocol.connection._connection.local_settings.max_frame_size == h2_tuning.BULK_MAX_FRAME
                bulk = pool._channels["node-2#bulk"]._protocol.connection._connection
                assert bulk.remote_settings.max_frame_size == h2_tuning.BULK_MAX_FRAME  # what the client may send
        finally:
            await server.stop()

    asyncio.run(main())


def _connected(kind: type) -> tuple[object, object]:
    """A client connection of ``kind`` to a server H2Connection, settings exchanged (1 MiB frames, big windows)."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.settings import SettingCodes

    client = kind(H2Configuration(client_side=True))
    server = H2Connection(H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    server.update_settings({SettingCodes.MAX_FRAME_SIZE: h2_tuning.BULK_MAX_FRAME,
                            SettingCodes.INITIAL_WINDOW_SIZE: 2 ** 31 - 1})
    server.increment_flow_control_window(2 ** 31 - 1 - 65535)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    client.send_headers(1, [(":method", "POST"), (":path", "/s4cluster.v1.S4Cluster/PutBlob"), (":scheme", "http"),
                            (":authority", "node-2")])
    return client, server


@given(st.lists(st.tuples(st.integers(0, 3 << 20), st.booleans()), min_size=1, max_size=4))
def test_issue19_lean_h2_connection_sends_the_bytes_hyperframe_would(sends: list[tuple[int, bool]]) -> None:
    """Before: each DATA payload was copied four times on its way out (serialize's join and concatenation, the
    outgoing bytearray, ``bytes()`` of it). The lean path must put exactly hyperframe's bytes on the wire."""
    from h2.connection import H2Connection

    lean, plain = _connected(h2_tuning.LeanH2Connection)[0], _connected(H2Connection)[0]
    wire: dict[str, bytearray] = {"lean": bytearray(), "plain": bytearray()}
    for n, end in sends + [(0, True)]:
        data = bytes([n % 251]) * n
        for name, conn in (("lean", lean), ("plain", plain)):
            sent = 0
            while True:
                take = min(n - sent, conn.max_outbound_frame_size)  # type: ignore[attr-defined]
                last = sent + take == n
                conn.send_data(1, data[sent:sent + take], end_stream=end and last)  # type: ignore[attr-defined]
                sent += take
                if last:
                    break
            wire[name] += conn.data_to_send()  # type: ignore[attr-defined]
        if end:
            break
    assert wire["lean"] == wire["plain"]


def test_issue19_lean_h2_connection_hands_a_large_buffer_over_without_copying_it() -> None:
    client, server = _connected(h2_tuning.LeanH2Connection)
    server.receive_data(client.data_to_send())  # type: ignore[attr-defined]  # the HEADERS
    payload = b"\x07" * (1 << 20)
    client.send_data(1, payload)  # type: ignore[attr-defined]
    out = client.data_to_send()  # type: ignore[attr-defined]
    assert len(out) == 9 + len(payload) and bytes(out[9:]) == payload
    assert isinstance(out, bytearray)  # the connection's own buffer, not a bytes() copy of it
    assert client._data_to_send == bytearray() and client._data_to_send is not out  # type: ignore[attr-defined]
    events = server.receive_data(bytes(out))  # type: ignore[attr-defined]
    assert sum(len(e.data) for e in events if hasattr(e, "data") and e.data) == len(payload)


def _body_without_trace(function: object) -> str:
    """The function's statements as a syntax tree dump, its docstring and h2's trace log call left out."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    kept = [s for s in fn.body
            if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))  # docstring
            and "logger.trace" not in ast.unparse(s)]
    return "\n".join(ast.dump(s) for s in kept)


def test_issue19_h2_receive_frame_is_h2s_own_without_the_trace_repr() -> None:
    from h2.connection import H2Connection

    original = h2_tuning._original_receive_frame
    assert "logger.trace" in __import__("inspect").getsource(original)  # what is left out is still there to leave out
    assert _body_without_trace(h2_tuning._receive_frame) == _body_without_trace(original)
    assert H2Connection._receive_frame is h2_tuning._receive_frame


def test_issue19_h2_receive_frame_does_not_format_received_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    formatted: list[object] = []

    def loud(frame: object) -> str:
        formatted.append(frame)
        return "loud"

    client = H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    server = H2Connection(H2Configuration(client_side=False))
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.send_headers(1, [(":method", "POST"), (":path", "/x"), (":scheme", "http"), (":authority", "a")])
    server.receive_data(client.data_to_send())
    monkeypatch.setattr(hyperframe.frame.Frame, "__repr__", loud)
    assert repr(hyperframe.frame.DataFrame(1)) == "loud" and formatted  # what a trace log would have called
    formatted.clear()
    events = server._receive_frame(hyperframe.frame.DataFrame(1, data=b"payload"))
    assert [type(e).__name__ for e in events] == ["DataReceived"] and formatted == []


class _Transport:
    """What a connection writes to its transport, in order."""

    def __init__(self) -> None:
        self.wire = bytearray()
        self.written: list[object] = []

    def writelines(self, parts: tuple[object, ...]) -> None:
        for part in parts:
            self.written.append(part)
            self.wire += part  # type: ignore[operator]


@given(st.lists(st.tuples(st.integers(0, 3 << 20), st.booleans()), min_size=1, max_size=4))
def test_issue19_lean_h2_connection_on_a_transport_sends_the_bytes_hyperframe_would(
        sends: list[tuple[int, bool]]) -> None:
    """With its transport known, a large payload goes to the transport as it is (after what was queued before and
    its frame header): the wire, transport writes and ``data_to_send`` interleaved as grpclib does, is plain h2's."""
    from h2.connection import H2Connection

    lean, plain = _connected(h2_tuning.LeanH2Connection)[0], _connected(H2Connection)[0]
    transport = _Transport()
    lean.transport = transport  # type: ignore[attr-defined]
    plain_wire = bytearray()
    payloads: list[bytes] = []
    for n, end in sends + [(0, True)]:
        data = bytes([n % 251]) * n
        for conn in (lean, plain):
            sent = 0
            while True:
                take = min(n - sent, conn.max_outbound_frame_size)  # type: ignore[attr-defined]
                last = sent + take == n
                piece = data[sent:sent + take]
                conn.send_data(1, piece, end_stream=end and last)  # type: ignore[attr-defined]
                if conn is lean and take >= h2_tuning.LEAN_BYTES:
                    payloads.append(piece)
                sent += take
                if conn is lean:
                    transport.wire += conn.data_to_send()  # type: ignore[attr-defined]  # grpclib's write after
                else:
                    plain_wire += conn.data_to_send()  # type: ignore[attr-defined]
                if last:
                    break
        if end:
            break
    assert transport.wire == plain_wire
    assert [p for p in transport.written if isinstance(p, bytes)] == payloads  # the payloads themselves
    assert all(any(p is q for q in transport.written) for p in payloads), "a payload was copied"
