"""Issue 19: read leases only for the nodes that read, in real server processes (three s4-server processes on
127.0.0.1/.2/.3, two HTTP workers each: the workers' reads stamp the shared gate file, the supervisor's heartbeat
reads it and asks). Clients go through node-1: node-1 asks for leases and reads from its own copy; node-2 and
node-3 serve nothing and ask for none, so node-1's writes do not wait for their copies. A read through node-2 right
after a write through node-1 sees it (the quorum path: node-2 holds no lease yet) and makes node-2 ask: a heartbeat
or two later it reads locally, and node-1's next write is on node-2 before it is acknowledged. With
S4_READ_LEASE_IDLE_SECS=2 on node-2, its heartbeat stops asking once its reads stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.s3client import make_client
from helpers.server import ServerProcess
from helpers.server_pool import all_alive, health, running_pool, token, wait_for

BUCKET = "asking"


def lease(node: ServerProcess, tok: str) -> dict[str, Any]:
    return dict(health(node, tok)["read_lease"])


def read(client: Any, key: str) -> bytes:
    return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_issue19_only_the_nodes_that_read_ask_for_read_leases(tmp_path: Path) -> None:
    with running_pool(tmp_path, workers=2, overrides={1: {"S4_READ_LEASE_IDLE_SECS": "2"}}) as pool:
        tokens = [token(n) for n in pool]
        wait_for("the 3 nodes alive everywhere", lambda: all_alive(pool, tokens), pool)
        one, two = make_client(pool[0].endpoint), make_client(pool[1].endpoint)
        one.create_bucket(Bucket=BUCKET)
        one.put_object(Bucket=BUCKET, Key="k", Body=b"v1")
        wait_for("node-1 asking and reading locally",
                 lambda: read(one, "k") == b"v1" and lease(pool[0], tokens[0])["local_reads"], pool)
        assert lease(pool[0], tokens[0])["asking"] is True
        for node, tok in zip(pool[1:], tokens[1:], strict=True):  # no read served: no lease asked, none held
            assert {k: lease(node, tok)[k] for k in ("asking", "local_reads")} == {"asking": False,
                                                                                   "local_reads": False}

        one.put_object(Bucket=BUCKET, Key="k", Body=b"v2")
        assert read(two, "k") == b"v2"  # at once, through a node that holds no lease: the quorum path
        wait_for("node-2 asking and reading locally (its reads want leases)",
                 lambda: read(two, "k") == b"v2" and lease(pool[1], tokens[1])["local_reads"], pool)
        one.put_object(Bucket=BUCKET, Key="k", Body=b"v3")  # waits for node-2's copy: node-2 holds node-1's lease
        assert read(two, "k") == b"v3"
        assert lease(pool[2], tokens[2])["asking"] is False  # node-3 still serves nothing

        wait_for("node-2 no longer asking, 2 s after its last read",
                 lambda: lease(pool[1], tokens[1])["asking"] is False, pool)
        wait_for("node-2's last leases run out", lambda: lease(pool[1], tokens[1])["local_reads"] is False, pool)
        one.put_object(Bucket=BUCKET, Key="k", Body=b"v4")
        assert read(two, "k") == b"v4"  # the quorum path again, and node-2 asks again
