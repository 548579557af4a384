"""The framework ceiling for ``--peer noop``: a falcon ASGI app on uvicorn that does no storage and checks no auth.

    python -m s4.tools.bench.noop --port 9700

PUT drains the body and answers an ETag, GET answers a fixed 4 KiB body, HEAD its length, DELETE 204, anything
else an empty 200. Served with the same uvicorn settings as ``s4-server`` (uvloop, httptools, one process).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from typing import Any

import falcon
import falcon.asgi
import uvicorn

BODY = bytes(range(256)) * 16
ETAG = f'"{hashlib.md5(BODY).hexdigest()}"'


async def sink(req: falcon.asgi.Request, resp: falcon.asgi.Response | None, **_: Any) -> None:
    """Answer every path and method without touching any storage."""
    assert resp is not None  # None only for WebSocket routes, which this app has none of
    if req.method == "PUT":
        await req.stream.read()
        resp.set_header("ETag", ETAG)
    elif req.method == "GET":
        resp.data = BODY
    elif req.method == "HEAD":
        resp.content_length = len(BODY)
        resp.set_header("ETag", ETAG)
    elif req.method == "DELETE":
        resp.status = falcon.HTTP_204
    else:
        await req.stream.read()


def build_app() -> falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]:
    app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response] = falcon.asgi.App()
    app.add_sink(sink, prefix="/")
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s4.tools.bench.noop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    uvicorn.run(build_app(), host=args.host, port=args.port, loop="uvloop", http="httptools", lifespan="off",
                log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
