"""cluster/h2_tuning.py: hyperframe's frame repr without hexlifying the whole payload (the same string for any
input, and installed once the cluster's gRPC modules are imported), and the blob connection advertising 1 MiB DATA
frames (a real connection on 127.0.0.1). Fails loudly when the grpclib / hyperframe internals it uses move."""

from __future__ import annotations

import asyncio

import hyperframe.frame
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
