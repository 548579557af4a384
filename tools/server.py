"""``s4-server``: the composition root. Reads settings, opens the engine, serves the falcon app on uvicorn.

The only module that imports s4.api. Shutdown on SIGTERM/SIGINT lets in-flight requests finish (uvicorn's
graceful shutdown), then closes the engine: sequencer drained, journal and views closed cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable

import uvicorn

from s4.api.app import build_app
from s4.api.settings import ApiSettings
from s4.engine import Engine, EngineOptions
from s4.engine.workers.service import Workers, WorkerSettings, for_engine

from .config import ConfigError, dev_credentials, load_settings, resolve_data_dir

log = logging.getLogger("s4.server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s4-server", description="S4: S3-compatible object storage")
    parser.add_argument("--config", help="path to config.toml (env vars override it)")
    parser.add_argument("--log-level", default=os.environ.get("S4_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(config_path=args.config)
    except ConfigError as exc:
        print(f"s4-server: configuration error: {exc}", file=sys.stderr)
        return 2
    data_dir = resolve_data_dir(settings)
    data_dir.mkdir(parents=True, exist_ok=True)
    if settings.workers not in (None, 1):
        log.warning("S4_WORKERS=%s: multi-process serving is not available yet; serving with one process",
                    settings.workers)
    access, secret = settings.access_key, settings.secret_key
    generated = not (access and secret)
    if generated:
        access, secret = dev_credentials(data_dir)
    engine = Engine(EngineOptions(data_dir=data_dir, volume_size_bytes=settings.volume_size_bytes))
    iam_enabled = bool(settings.root_password)
    jwt_secret = settings.jwt_secret or ""
    if iam_enabled:
        root = engine.ensure_root(settings.root_username, settings.root_password)
        log.info("IAM enabled; root user %r (%s)", root["username"], root["id"])
        if not jwt_secret:
            jwt_secret = secrets.token_urlsafe(32)
            log.warning("S4_JWT_SECRET is not set: admin tokens are signed with a random per-process key and "
                        "die with this process (set S4_JWT_SECRET in production)")
    domains = tuple(d.strip().lower() for d in settings.domains.split(",") if d.strip())
    app = build_app(engine, ApiSettings(access_key=access, secret_key=secret, region=settings.region,
                                        max_upload_bytes=settings.max_upload_bytes, vhost_domains=domains,
                                        iam_enabled=iam_enabled, jwt_secret=jwt_secret,
                                        metrics_enabled=settings.metrics_enabled,
                                        select_enabled=settings.select_enabled,
                                        select_max_memory=settings.select_max_memory,
                                        select_timeout_s=settings.select_timeout_s))
    host, port = settings.host_port
    scheme = "https" if settings.tls_cert else "http"
    endpoint = f"{scheme}://{host}:{port}"
    print(f"S4 listening on {endpoint}  (data: {data_dir})", flush=True)
    if generated:
        print(f"  Access key: {access}\n  Secret key: {secret}   (generated dev keys, kept in {data_dir})", flush=True)
        print(f"  Try: AWS_ACCESS_KEY_ID={access} AWS_SECRET_ACCESS_KEY={secret} "
              f"aws --endpoint-url {endpoint} s3 ls", flush=True)
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools", lifespan="off",
                            log_level="warning", access_log=False, timeout_graceful_shutdown=30,
                            ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key)
    workers = for_engine(engine, WorkerSettings.from_values(settings.values))
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with the default disposition that would kill
    # the process before the engine is closed. A Python-level handler lets the re-raised signal return here.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: log.info("signal %d: shutting down", signum))
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(uvicorn.Server(config), workers))
    finally:
        engine.close()
        log.info("journal and views closed")
    return 0


async def _serve(server: uvicorn.Server, workers: Workers) -> None:
    """uvicorn plus the node's background workers (lifecycle, compaction, scrubber) on the same event loop."""
    workers.start()
    try:
        await server.serve()
    finally:
        await workers.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
