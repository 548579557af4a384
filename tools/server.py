"""``s4-server``: the composition root. Reads settings, opens the engine, serves the falcon app on uvicorn. The only
module that imports s4.api. With ``S4_WORKERS`` (default: the core count) above 1 the process started by the user
becomes the supervisor (tools/supervisor.py: journal, sequencer, background jobs) and re-runs this entry point as
HTTP worker processes (the hidden ``--worker-id`` arguments). With 1 worker everything runs in this process. With
``S4_MODE=cluster`` the process that owns the journal also runs the cluster node (cluster/node.py: the gRPC server
on S4_NODE_GRPC_ADDR, the heartbeat, and through cluster/wiring.py the blobs, reads, cas and events areas and the
catch-up and hint loops over this engine) and gives the engine its cluster status port; workers ask the supervisor
for it. Its commands commit through the replicated commit path (engine/replicated_commit.py): answered once the
write quorum holds them. Shutdown on SIGTERM/SIGINT lets in-flight requests finish (uvicorn's graceful shutdown),
stops the background jobs (their pool leases given back), hands the cluster node's work off and stops it
(cluster/drain.py: hints delivered, read leases given back, SWIM leave), then closes the engine: sequencer drained,
journal and views closed cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from s4.api.app import build_app
from s4.api.http_protocol import ConnectionLimits, connection_cap, protocol_class, raise_nofile_limit
from s4.api.metrics import ClusterMetrics, JournalMetrics, enable_multiprocess
from s4.api.scrub_metrics import ScrubMetrics
from s4.api.settings import ApiSettings

# The cluster package (grpclib, aiohttp) is imported by the functions of the cluster and gateway modes only: a
# single node starts without it (~40% less import time for every process it starts).
from s4.cluster.auth import iam_key, sse_key
from s4.cluster.config import ClusterConfigError
from s4.cluster.errors import GrpcBindError, RejoinRefused
from s4.engine import Engine, EngineOptions
from s4.engine.datadir import DataDirLockedError, NodeIdMismatchError
from s4.engine.iam import root_user_id
from s4.engine.jobs.service import JobSettings, for_engine
from s4.engine.local_commit import LocalCommitPath
from s4.engine.ports import SingleNodeStatus, SoleNodeLeases
from s4.engine.read_gate import ReadGate, gate_path
from s4.engine.remote import (
    ChannelCommitPath,
    LoopChannel,
    RemoteBlobPush,
    RemoteBlobRepair,
    RemoteCluster,
    RemoteIamFeed,
    RemoteKeyReads,
    RemoteNames,
)
from s4.engine.replicated_commit import ReplicatedCommitPath
from s4.journal import CorruptJournalError

from . import supervisor
from .config import DEV_CREDENTIALS, ConfigError, Settings, dev_credentials, load_settings, resolve_data_dir
from .malloc_tuning import tune_malloc

if TYPE_CHECKING:
    from s4.cluster.node import ClusterNode
    from s4.engine.notify.delivery import Notifier

log = logging.getLogger("s4.server")
UNLINKED_SWEEP_S = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s4-server", description="S4: S3-compatible object storage")
    parser.add_argument("--config", help="path to config.toml (env vars override it)")
    parser.add_argument("--log-level", default=os.environ.get("S4_LOG_LEVEL", "info"))
    for hidden in ("--worker-id", "--listen-fd", "--sequencer-fd", "--parent-pid", "--console-fd"):
        parser.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(config_path=args.config)
    except ConfigError as exc:
        print(f"s4-server: configuration error: {exc}", file=sys.stderr)
        return 2
    tune_malloc(settings.malloc_tuning)  # large bodies' buffers stay on the heap (tools/malloc_tuning.py)
    raise_nofile_limit()  # one descriptor per connection and per volume (the workers inherit the raised limit)
    if settings.gateway is not None:  # S4_MODE=gateway: no engine, no data directory (docs/architecture/gateway.md)
        return _run_gateway(settings)
    data_dir = resolve_data_dir(settings)
    if args.worker_id is not None:
        return _run_worker(settings, data_dir, args)
    count = settings.workers if settings.workers is not None else (os.cpu_count() or 1)
    # The commit port (engine/ports.py): this process owns the journal and commits every command of the node,
    # its workers' included (over their channels: tools/supervisor.py).
    commit_path = LocalCommitPath() if settings.cluster is None else ReplicatedCommitPath()
    try:  # first of all: the data directory's lock (engine/datadir.py), then journal recovery
        engine = Engine(EngineOptions(data_dir=data_dir, volume_size_bytes=settings.volume_size_bytes,
                                      disk_reserve_bytes=settings.disk_reserve_bytes, node_id=settings.node_id,
                                      shared_iam_key=_shared_iam_key(settings),
                                      shared_sse_key=_shared_sse_key(settings)),
                        commit_path)
    except (DataDirLockedError, NodeIdMismatchError, CorruptJournalError) as exc:
        print(f"s4-server: {exc}", file=sys.stderr)
        return 1
    cluster: ClusterNode | None = None
    try:
        access, secret = settings.access_key, settings.secret_key
        generated = "" if access and secret else "kept" if (data_dir / DEV_CREDENTIALS).exists() else "new"
        if generated:
            access, secret = dev_credentials(data_dir)
        jwt_secret = _prepare_iam(engine, settings)
        background = for_engine(engine, JobSettings.from_values(settings.values))
        background.notifier = _notifier(engine, settings)
        cluster = _cluster_node(engine, settings, commit_path, data_dir, count)
        if count > 1:
            listeners = supervisor.bind_listeners(*settings.host_port, count)
            metrics_path = supervisor.metrics_dir()
            if settings.metrics_enabled:  # the journal's numbers, published for every worker's /metrics
                enable_multiprocess(metrics_path)
                JournalMetrics(engine)
                background.scrub.listeners.append(ScrubMetrics(background.scrub).update)  # the scrubber runs here
                if cluster is not None:  # and the peers', after every heartbeat round
                    cluster.listeners.append(ClusterMetrics(cluster).update)
            env = {**os.environ, "S4_ACCESS_KEY_ID": access, "S4_SECRET_ACCESS_KEY": secret,
                   "PROMETHEUS_MULTIPROC_DIR": str(metrics_path)}
            if jwt_secret:
                env["S4_JWT_SECRET"] = jwt_secret
            assert commit_path.sequencer is not None  # opened with the engine
            replication = commit_path.replication if isinstance(commit_path, ReplicatedCommitPath) else None
            node = supervisor.Supervisor(engine, commit_path.sequencer, background, listeners,
                                         supervisor.worker_command(args.config, args.log_level), env, replication,
                                         engine.key_reads)
            node.console_listener = _bind_console(settings)  # one socket, accepted on by every worker
            _banner(settings, data_dir, access, secret, generated, f"{count} worker processes{_cluster_note(settings)}")
            _console_banner(settings, node.console_listener)
            _run(node.serve, background, node.request_stop, cluster)
        else:
            routers: list[Any] = []
            api_settings = _api_settings(settings, access, secret, jwt_secret)
            app = build_app(engine, api_settings, _pool_router(engine, settings, routers))
            console_listener = _bind_console(settings)
            _banner(settings, data_dir, access, secret, generated, f"1 process{_cluster_note(settings)}")
            _console_banner(settings, console_listener)
            server = uvicorn.Server(_uvicorn_config(app, settings))
            console = _console_server(engine, settings, api_settings, console_listener)
            _run(_closing(_with_console(server.serve, console), routers), background, _stopper(server, console),
                 cluster)
    except GrpcBindError as exc:
        print(f"s4-server: {exc}", file=sys.stderr)
        return 1
    except RejoinRefused as exc:  # docs/architecture/tombstones.md, "Rejoining"
        print(f"s4-server: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, ClusterConfigError) as exc:  # ClusterConfigError: a registry that would move (pools.md)
        print(f"s4-server: configuration error: {exc}", file=sys.stderr)
        return 2
    finally:
        if cluster is not None:  # stopped already, unless start-up failed before it ran
            cluster.close_resources()
        engine.close()
        log.info("journal and views closed")
    if cluster is not None and cluster.rejoin is not None and cluster.rejoin.refused is not None:
        print(f"s4-server: {cluster.rejoin.refused}", file=sys.stderr)  # told while running: stopped, refusing
        return 2
    return 0


def _cluster_node(engine: Engine, settings: Settings, commit_path: LocalCommitPath, data_dir: Path,
                  workers: int) -> ClusterNode | None:
    """The engine's cluster status port: the cluster node (S4_MODE=cluster; started by ``_run``), or this node alone.
    The process that owns the journal calls this; its workers ask it (``_run_worker``). The node serves the blobs,
    reads, cas and events areas and runs catch-up and hints over this engine (cluster/wiring.py); what it opened
    is closed by its ``stop()``."""
    config = settings.cluster
    if config is None:
        engine.cluster = SingleNodeStatus(engine.node_id, str(settings.bind))
        for_engine(engine).leases = SoleNodeLeases(engine.node_id)  # a pool of one: every job lease is granted
        return None
    from s4.cluster.grpc_logging import quiet_deadlines
    from s4.cluster.node import ClusterNode, journal_head
    from s4.cluster.scrub_heal import healer_for
    from s4.cluster.wiring import CLUSTER_VOLUMES_WORKER, EngineParts, wire_node

    if workers >= CLUSTER_VOLUMES_WORKER:
        raise ConfigError(f"S4_WORKERS={workers}: a cluster node runs at most {CLUSTER_VOLUMES_WORKER - 1} workers")
    for warning in config.warnings:
        log.warning("cluster: %s", warning)
    quiet_deadlines()  # an expired inter-node call is a WARNING, not grpclib's ERROR traceback
    assert engine.journal is not None  # this process owns the journal (LocalCommitPath)
    node = ClusterNode(config, journal_head(engine.journal, engine.views.last_seq))
    wired = wire_node(node, EngineParts(data_dir, engine.views, engine.journal, commit_path, space=engine.space,
                                on_damage=engine.report_damage, volume_size_bytes=settings.volume_size_bytes,
                                on_seal=engine._on_seal, sequencer=commit_path.sequencer))
    engine.cluster = node
    engine.names = wired.cas.names  # CreateBucket/DeleteBucket decided by the pool's register (engine/bucket_names.py)
    engine.iam_feed = node.iam_feed  # several pools: an unknown access key is looked for in the registry's IAM
    engine.pinned_volumes = wired.blobs.staged.volumes  # compaction leaves staged blobs' volumes alone
    if isinstance(commit_path, ReplicatedCommitPath):  # from now on a write is answered once W replicas hold it
        commit_path.attach(wired.replicator)
    engine.key_reads = wired.key_reads  # and a read of a key first settles it on R replicas
    engine.listings = wired.listings  # merged from R replicas, repaired and covered before the answer
    engine.read_gate = wired.read_gate  # ... unless this node holds read leases and the key is settled
    wired.listings.settle_with(wired.key_reads, wired.read_gate)
    for_engine(engine).leases = wired.leases  # lifecycle and multipart expiry act once per pool (job leases)
    # bad or missing blobs are healed from replicas, by the scrubber and by reads that meet them (scrub_heal.py)
    engine.blob_repair = healer_for(node, wired.blobs, engine.sequencer.submit, for_engine(engine).scrub)
    engine.blob_push = wired.pusher  # a large body's chunks go to the peers while it uploads (cluster/blob_push.py)
    node.drain.hooks.append(for_engine(engine).hand_back_leases)  # a draining node gives back its job leases
    node.drain.hooks.append(_drain_marker(drain_marker(data_dir)))  # and its workers' /health answers 503
    return node


def _notifier(engine: Engine, settings: Settings) -> Notifier | None:
    """Bucket notifications' delivery job (engine/notify/delivery.py), when the operator defined targets. In a pool
    a node delivers the events it stamped (once per cluster: docs/architecture/notifications.md)."""
    from s4.engine.notify.targets import WebhookTarget

    targets = [WebhookTarget(tid, doc.get("endpoint", ""), doc.get("auth_token", ""))
               for tid, doc in sorted(settings.notify_targets.items())]
    if not targets:
        return None
    from s4.engine.notify.delivery import Notifier, NotifySettings  # aiohttp: loaded when there are targets

    limits = NotifySettings(max_attempts=settings.notify_max_attempts, backoff_max_s=settings.notify_backoff_max_s,
                            timeout_s=settings.notify_timeout_s)
    return Notifier(engine, targets, limits, region=settings.region,
                    only_origin=None if settings.cluster is None else engine.node_id)


def _run_gateway(settings: Settings) -> int:
    """S4_MODE=gateway: one process, no engine and nothing on disk. It pings the pool's nodes (cluster/gateway.py)
    and forwards every S3 and admin request to a live one (api/gateway.py); stopping closes the connections."""
    from s4.api.gateway import BucketPools, GatewaySettings, build_gateway_app  # aiohttp: loaded by a gateway only
    from s4.cluster.gateway import PoolSet, PoolWatch
    from s4.cluster.grpc_logging import quiet_deadlines
    from s4.cluster.peers import source_address

    config = settings.gateway
    for warning in config.warnings:
        log.warning("gateway: %s", warning)
    quiet_deadlines()
    host = settings.host_port[0]
    nodes = config.pools[0].nodes
    # outgoing connections leave from the gateway's own address, when it is an IP the nodes' addresses route from
    local = source_address(host, nodes[0].grpc.host) if host else None
    watch: Any = PoolWatch(config, local) if len(config.pools) == 1 else PoolSet.for_pools(config, local, config.pools)
    routes = None if len(config.pools) == 1 else BucketPools(watch, _domains(settings), config.pools[0].name)
    app, served = build_gateway_app(watch, GatewaySettings(local_host=local, metrics_enabled=settings.metrics_enabled,
                                                           access_log=settings.access_log), routes)
    server = uvicorn.Server(_uvicorn_config(served, settings, date_header=False))  # the node's Date passes through

    async def serve() -> None:
        await watch.start()
        try:
            await server.serve()
        finally:
            await app.close()
            await watch.stop()

    fronted = "; ".join(f"pool {p.name}: {', '.join(n.node_id for n in p.nodes)}" for p in config.pools)
    print(f"S4 gateway listening on {'https' if settings.tls_cert else 'http'}://{host}:{settings.host_port[1]}  "
          f"(cluster {config.cluster_name}, gateway {config.gateway_id} for {fronted}; stores nothing)", flush=True)
    _run(serve, None, lambda: setattr(server, "should_exit", True))
    return 0


def drain_marker(data_dir: Path) -> Path:
    """Exists while the node drains (cluster/drain.py), so every process's ``/health`` sees it without a call."""
    return data_dir / "cluster" / "draining"


def _drain_marker(path: Path) -> Callable[[bool], Awaitable[int]]:
    path.unlink(missing_ok=True)  # a new life does not drain

    async def mark(draining: bool) -> int:
        if draining:
            path.touch()
        else:
            path.unlink(missing_ok=True)
        return 0

    return mark


def _shared_iam_key(settings: Settings) -> bytes | None:
    """A pool's nodes encrypt S3 secrets under one key derived from the cluster secret (credentials replicate)."""
    return None if settings.cluster is None else iam_key(settings.cluster.key)


def _shared_sse_key(settings: Settings) -> bytes | None:
    """A pool's nodes wrap SSE-S3 data keys under one master key derived from the cluster secret."""
    return None if settings.cluster is None else sse_key(settings.cluster.key)


def _cluster_note(settings: Settings) -> str:
    config = settings.cluster
    return "" if config is None else (f"; cluster {config.cluster_name}, node {config.node_id} of pool "
                                      f"{config.pool_name}, gRPC on {config.grpc_addr}")


def _run_worker(settings: Settings, data_dir: Path, args: argparse.Namespace) -> int:
    """An HTTP worker process (started by the supervisor): own volumes, direct reads, and the supervisor's channel
    as its commit port (engine/remote)."""
    supervisor.die_with_parent(args.parent_pid)
    listener = socket.socket(fileno=args.listen_fd)
    engine_ready = False

    def stop_when_ready() -> None:  # the supervisor went away: stop, unless start-up is still failing on its own
        if engine_ready:
            os.kill(os.getpid(), signal.SIGTERM)

    channel = LoopChannel(socket.socket(fileno=args.sequencer_fd), name="sequencer", on_close=stop_when_ready)
    engine = Engine(EngineOptions(data_dir=data_dir, volume_size_bytes=settings.volume_size_bytes,
                                  worker=args.worker_id, disk_reserve_bytes=settings.disk_reserve_bytes,
                                  shared_iam_key=_shared_iam_key(settings),
                                  shared_sse_key=_shared_sse_key(settings)),
                    ChannelCommitPath(channel))
    engine_ready = True
    engine.cluster = RemoteCluster(channel, drain_marker(data_dir)) if settings.cluster is not None else \
        SingleNodeStatus(engine.node_id, str(settings.bind))
    peers: Any = None  # the cluster's PeerPool, when clustered
    if settings.cluster is not None:  # quorum reads and the register through the supervisor; listings here
        from s4.cluster.iam_feed import wanted as iam_feed_wanted
        from s4.cluster.listings import QuorumListings
        from s4.cluster.peers import PeerPool

        engine.key_reads = RemoteKeyReads(channel)
        engine.names = RemoteNames(channel)
        if iam_feed_wanted(settings.cluster):  # the supervisor runs the IAM feed (cluster/iam_feed.py)
            engine.iam_feed = RemoteIamFeed(channel)
        engine.blob_repair = RemoteBlobRepair(channel)  # a bad blob read here is healed by the supervisor
        engine.blob_push = RemoteBlobPush(channel)  # and a large body's chunks are pushed to the peers there
        peers = PeerPool(settings.cluster)
        engine.listings = QuorumListings(settings.cluster.node_id, [p.node_id for p in settings.cluster.peers],
                                         settings.cluster.read_quorum, engine.views, peers.stub)
        if gate_path(data_dir).exists():  # the supervisor publishes its read leases there (engine/read_gate.py)
            engine.read_gate = ReadGate.attach(gate_path(data_dir))
        engine.listings.settle_with(engine.key_reads, engine.read_gate)  # repaired and covered by the supervisor
    try:
        access, secret = settings.access_key or "", settings.secret_key or ""
        routers: list[Any] = []
        app = build_app(engine, _api_settings(settings, access, secret, settings.jwt_secret or ""),
                        _pool_router(engine, settings, routers))
        server = uvicorn.Server(_uvicorn_config(app, settings))
        console_listener = None if args.console_fd is None else socket.socket(fileno=args.console_fd)
        console = _console_server(engine, settings, _api_settings(settings, access, secret, settings.jwt_secret or ""),
                                  console_listener)

        async def serve_s3() -> None:
            await server.serve(sockets=[listener])

        async def serve() -> None:
            await channel.attach()
            sweeper = asyncio.get_running_loop().create_task(_sweep_unlinked(engine))
            try:
                await _with_console(serve_s3, console)()
            finally:
                sweeper.cancel()
                for router in routers:
                    await router.close()

        _run(serve, None, _stopper(server, console))
    finally:
        if peers is not None:
            peers.close()
        engine.close()
    return 0


async def _sweep_unlinked(engine: Engine) -> None:
    """Drop descriptors of volumes that compaction (in the supervisor) retired, so their space is freed."""
    while True:
        await asyncio.sleep(UNLINKED_SWEEP_S)
        with contextlib.suppress(OSError):
            engine.volumes.close_unlinked()


def _prepare_iam(engine: Engine, settings: Settings) -> str:
    """Seed the root user when IAM is on (first start only: engine.seed_root); the JWT secret the admin API signs
    with."""
    if not settings.root_password:
        return settings.jwt_secret or ""
    cluster = settings.cluster  # a pool: every node seeds the one root user (docs/operations.md, "Lost root password")
    pool_root = None if cluster is None else root_user_id(cluster.cluster_name, settings.root_username)
    root = engine.seed_root(settings.root_username, settings.root_password, pool_root)
    if root is None:
        log.warning("IAM enabled; no user named %r: S4_ROOT_PASSWORD only seeds the root user of a node without "
                    "IAM users (to regain access: `s4-admin reset-root`, docs/operations.md)", settings.root_username)
    else:
        log.info("IAM enabled; root user %r (%s%s)", root["username"], root["id"],
                 "" if root.get("active", True) else ", deactivated")
    if settings.jwt_secret:
        return str(settings.jwt_secret)
    log.warning("S4_JWT_SECRET is not set: admin tokens are signed with a random key and die with this "
                "server (set S4_JWT_SECRET in production)")
    return secrets.token_urlsafe(32)


def _pool_router(engine: Engine, settings: Settings, routers: list[Any]) -> Callable[[Any], Any] | None:
    """Several pools (S4_CLUSTER_POOLS): the middleware that forwards a request for a bucket of another pool
    (api/pool_router.py), appended to ``routers`` once made (to close at the end); None with one pool."""
    config = settings.cluster
    if config is None or not config.other_pools:
        return None
    from s4.api.gateway import GatewayApp, GatewaySettings  # aiohttp: loaded by a node of several pools only
    from s4.api.pool_router import PoolRouter
    from s4.cluster.config import GatewayConfig
    from s4.cluster.gateway import PoolSet
    from s4.cluster.peers import source_address

    own = config.grpc_addr.host
    local = source_address(own, config.other_pools[0].nodes[0].grpc.host)
    as_guest = GatewayConfig(cluster_name=config.cluster_name, gateway_id=config.node_id, pools=config.other_pools,
                             max_clock_offset_s=config.max_clock_offset_s, key=config.key)
    pools = PoolSet.for_pools(as_guest, local, config.other_pools)
    forwarder = GatewayApp(pools, GatewaySettings(local_host=local, metrics_enabled=False, access_log=False))
    names, registry = engine.names, config.registry_pool.name
    assert names is not None

    async def locate(bucket: str) -> str | None:
        return await names.pool_of(bucket, registry)  # type: ignore[attr-defined, no-any-return]

    def wrap(app: Any) -> Any:
        router = PoolRouter(app, node_id=config.node_id, pool=config.pool_name, region=settings.region,
                            vhost_domains=_domains(settings), pools=pools, forwarder=forwarder, locate=locate,
                            held_here=engine.holds_bucket,
                            own_usage=lambda: sum(b.bytes_stored for b in engine.list_buckets()),
                            iam_pool=None if registry == config.pool_name else registry)
        routers.append(router)
        return router
    return wrap


def _closing(serve: Callable[[], Awaitable[None]], routers: list[Any]) -> Callable[[], Awaitable[None]]:
    async def serving() -> None:
        try:
            await serve()
        finally:
            for router in routers:
                await router.close()
    return serving


def _pinned_pool(settings: Settings) -> str:
    """Several pools: this node's pool (CreateBucket's LocationConstraint, GetBucketLocation); "" with one."""
    config = settings.cluster
    return config.pool_name if config is not None and config.other_pools else ""


def _domains(settings: Settings) -> tuple[str, ...]:
    return tuple(d.strip().lower() for d in settings.domains.split(",") if d.strip())


def _api_settings(settings: Settings, access: str, secret: str, jwt_secret: str) -> ApiSettings:
    domains = tuple(d.strip().lower() for d in settings.domains.split(",") if d.strip())
    return ApiSettings(access_key=access, secret_key=secret, region=settings.region,
                       max_upload_bytes=settings.max_upload_bytes, vhost_domains=domains,
                       iam_enabled=bool(settings.root_password), jwt_secret=jwt_secret,
                       metrics_enabled=settings.metrics_enabled, select_enabled=settings.select_enabled,
                       select_max_memory=settings.select_max_memory, select_timeout_s=settings.select_timeout_s,
                       select_process_memory=settings.select_node_memory // (settings.workers or os.cpu_count() or 1),
                       access_log=settings.access_log, pool_name=_pinned_pool(settings),
                       default_object_ownership=settings.default_object_ownership,
                       sse_c_allow_http=settings.sse_c_allow_http,
                       notify_targets=frozenset(settings.notify_targets))


def _bind_console(settings: Settings) -> socket.socket | None:
    """The web console's listening socket (S4_CONSOLE_BIND), bound by the process the user started: served there
    with one process, shared by every worker with several (docs/architecture/console.md). A port that cannot be
    bound is a warning, not a failed start: S3 keeps serving without the console."""
    where = settings.console_host_port
    if where is None:
        return None
    host, port = where
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        settings.values["console_problem"] = exc.strerror or str(exc)  # said after the banner (_console_banner)
        return None
    sock.set_inheritable(True)
    return sock


def _console_banner(settings: Settings, listener: socket.socket | None) -> None:
    """After the S3 banner: where the console is, or why it is not there."""
    where = settings.console_host_port
    if where is None:
        return
    host, port = where
    if listener is None:
        log.warning("web console not started: cannot listen on %s:%d (%s); S3 keeps serving. Set S4_CONSOLE_BIND "
                    "to a free host:port, or off", host, port, settings.values.get("console_problem", "unknown"))
        return
    scheme = "https" if settings.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    print(f"  Web console: {scheme}://{shown}:{listener.getsockname()[1]}", flush=True)


def _console_server(engine: Engine, settings: Settings, api_settings: ApiSettings,
                    listener: socket.socket | None) -> tuple[uvicorn.Server, socket.socket] | None:
    """The console's uvicorn server over ``listener`` (None: the console is off or its port was busy)."""
    if listener is None:
        return None
    from s4.api.console import ConsoleSettings, build_console_app  # jinja2: loaded only with the console on

    s3_host, s3_port = settings.host_port
    app = build_console_app(engine, api_settings, ConsoleSettings(s3_port=s3_port, s3_host=s3_host,
                                                                  s3_tls=bool(settings.tls_cert)))
    return uvicorn.Server(_uvicorn_config(app, settings)), listener


def _with_console(serve: Callable[[], Awaitable[None]],
                  console: tuple[uvicorn.Server, socket.socket] | None) -> Callable[[], Awaitable[None]]:
    """``serve`` with the console's server beside it on the same loop; the console stops when ``serve`` does."""
    if console is None:
        return serve
    server, listener = console

    async def both() -> None:
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[listener]))
        try:
            await serve()
        finally:
            server.should_exit = True
            try:
                await task
            except Exception as exc:  # noqa: BLE001 - the console never takes the S3 service down with it
                log.warning("web console stopped with an error: %s", exc)

    return both


def _stopper(server: uvicorn.Server, console: tuple[uvicorn.Server, socket.socket] | None) -> Callable[[], None]:
    def stop() -> None:
        server.should_exit = True
        if console is not None:
            console[0].should_exit = True

    return stop


def _uvicorn_config(app: object, settings: Settings, *, date_header: bool = True) -> uvicorn.Config:
    host, port = settings.host_port
    cap = connection_cap(settings.max_connections)
    if cap < settings.max_connections:
        log.warning("S4_MAX_CONNECTIONS lowered from %d to %d to fit the open-files limit", settings.max_connections,
                    cap)
    limits = ConnectionLimits(max_header_bytes=settings.max_header_bytes, header_timeout_s=settings.header_timeout_s,
                              body_timeout_s=settings.body_timeout_s, max_connections=cap,
                              access_log=settings.access_log)
    # server_header=False: the app sends its own "Server: S4" (uvicorn's would make a second Server header).
    # access_log=False: the app logs each request itself (api/access_log.py). Forwarding headers (X-Forwarded-For)
    # only from S4_TRUSTED_PROXIES (uvicorn would trust them from 127.0.0.1 by default).
    proxies = list(settings.trusted_proxies)
    return uvicorn.Config(app, host=host, port=port, loop="uvloop", http=protocol_class(limits),  # type: ignore[arg-type]
                          lifespan="off", log_level="warning", access_log=False, server_header=False,
                          proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
                          timeout_graceful_shutdown=30, ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key,
                          date_header=date_header)


def _banner(settings: Settings, data_dir: Path, access: str, secret: str, generated: str, mode: str) -> None:
    """``generated``: "new" prints dev keys generated at this (first) start; "kept" only says where they are."""
    host, port = settings.host_port
    endpoint = f"{'https' if settings.tls_cert else 'http'}://{host}:{port}"
    print(f"S4 listening on {endpoint}  (data: {data_dir}; {mode})", flush=True)
    if generated == "kept":
        print(f"  Access key: {access}   (generated dev keys; the secret key is in {data_dir / DEV_CREDENTIALS}, "
              "printed at the first start only)", flush=True)
    elif generated:
        print(f"  Access key: {access}\n  Secret key: {secret}   (generated dev keys, kept in {data_dir})", flush=True)
        print(f"  Try: AWS_ACCESS_KEY_ID={access} AWS_SECRET_ACCESS_KEY={secret} "
              f"aws --endpoint-url {endpoint} s3 ls", flush=True)


def _run(serve: Callable[[], Awaitable[None]], background: object | None, stop: Callable[[], None],
         cluster: ClusterNode | None = None) -> None:
    """Run ``serve`` on uvloop, with the node's background jobs (lifecycle, compaction, scrubber) and its cluster
    node (gRPC server and heartbeat: started first, so an unusable S4_NODE_GRPC_ADDR stops start-up with
    GrpcBindError before anything serves; stopped last) if given.

    SIGTERM/SIGINT call ``stop`` whenever they arrive, including before uvicorn installs its own handlers (a
    signal swallowed in that window would leave the server running). uvicorn also re-raises the signal after
    its graceful shutdown; with the default disposition that would kill the process before the engine is
    closed, so the Python-level handler stays in place and the re-raised signal returns here.
    """
    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    async def with_background() -> None:
        if cluster is not None:
            cluster.on_refused = stop  # a peer says this node's data must not rejoin: stop serving it
            await cluster.start()
        try:
            if background is not None:
                background.start()  # type: ignore[attr-defined]
            try:
                await serve()
            finally:
                if background is not None:
                    await background.stop()  # type: ignore[attr-defined]
        finally:
            if cluster is not None:  # hand off hints and read leases, announce the SWIM leave, then stop
                await cluster.shutdown()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(with_background())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())
