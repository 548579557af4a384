"""Bucket notifications in a pool: three real nodes on 127.0.0.1/.2/.3 with the same webhook target, writes
spread over all of them; the receiver gets each change exactly once (not once per replica), because a node
delivers only the events it stamped itself (docs/architecture/notifications.md, "In a pool"). Every wait is a
deadline poll: the end state is "every node's cursor at its journal's end", then the counts are exact."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import requests
from helpers.s3client import make_client
from helpers.server import ServerProcess
from test_cluster_node import health, make_pool, token, wait_for
from test_notifications_api import Receiver, queue_config


def behind(node: ServerProcess, tok: str) -> int | None:
    resp = requests.get(f"{node.endpoint}/api/admin/notify/targets", headers={"Authorization": f"Bearer {tok}"},
                        timeout=30)
    assert resp.status_code == 200, resp.text
    (target,) = resp.json()["targets"]
    return target["behind"]  # type: ignore[no-any-return]


def test_each_change_is_delivered_once_per_pool_not_once_per_replica(tmp_path: Path,
                                                                     nodes: list[ServerProcess]) -> None:
    receiver = Receiver().start()
    try:
        env = {"S4_NOTIFY_WEBHOOK_ENDPOINT_hook": receiver.url}
        pool = make_pool(tmp_path, workers=1, overrides=dict.fromkeys(range(3), env))
        for node in pool:
            nodes.append(node.start())
        tokens = [token(node) for node in pool]
        wait_for("every node caught up", lambda: all(health(n, t).get("caught_up") is True
                                                      for n, t in zip(pool, tokens, strict=True)), pool)
        clients = [make_client(node.endpoint) for node in pool]
        clients[0].create_bucket(Bucket="notified")
        clients[1].put_bucket_notification_configuration(Bucket="notified", NotificationConfiguration=queue_config())
        keys = [f"obj-{i:02d}" for i in range(12)]
        for i, key in enumerate(keys):
            clients[i % 3].put_object(Bucket="notified", Key=key, Body=key.encode())
        wait_for("every change delivered", lambda: {k for _, k in receiver.records("notified")} >= set(keys), pool)
        wait_for("every node's cursor at its journal's end",
                 lambda: all(behind(n, t) == 0 for n, t in zip(pool, tokens, strict=True)), pool)
        assert Counter(k for _, k in receiver.records("notified")) == dict.fromkeys(keys, 1)
    finally:
        receiver.stop()
