"""Notification targets and limits: S4_NOTIFY_WEBHOOK_*_<ID> env vars and [notify.webhook.<ID>] tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.tools.config import ConfigError, load_settings


def test_no_targets_by_default() -> None:
    s = load_settings(env={})
    assert s.notify_targets == {}
    assert (s.notify_max_attempts, s.notify_backoff_max_s, s.notify_timeout_s) == (10, 60.0, 10.0)


def test_targets_from_the_file_and_the_env_which_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[notify]\nmax_attempts = 3\n[notify.webhook.a]\nendpoint = "http://127.0.0.1:1/a"\n'
                   'auth_token = "t-a"\n[notify.webhook.b]\nendpoint = "http://127.0.0.1:1/b"\n')
    s = load_settings(env={"S4_NOTIFY_WEBHOOK_ENDPOINT_b": "https://127.0.0.1:2/b",
                           "S4_NOTIFY_WEBHOOK_ENDPOINT_c-1": "http://127.0.0.1:3/c",
                           "S4_NOTIFY_WEBHOOK_AUTH_TOKEN_c-1": "t-c", "S4_NOTIFY_MAX_ATTEMPTS": "7"},
                      config_path=str(cfg))
    assert s.notify_targets == {"a": {"endpoint": "http://127.0.0.1:1/a", "auth_token": "t-a"},
                                "b": {"endpoint": "https://127.0.0.1:2/b"},
                                "c-1": {"endpoint": "http://127.0.0.1:3/c", "auth_token": "t-c"}}
    assert s.notify_max_attempts == 7


@pytest.mark.parametrize(("env", "named"), [
    ({"S4_NOTIFY_WEBHOOK_ENDPOINT_x": "ftp://host/x"}, "S4_NOTIFY_WEBHOOK_ENDPOINT_x"),
    ({"S4_NOTIFY_WEBHOOK_AUTH_TOKEN_y": "t"}, "S4_NOTIFY_WEBHOOK_ENDPOINT_y"),  # a token without an endpoint
    ({"S4_NOTIFY_WEBHOOK_ENDPOINT_a.b": "http://h/"}, "'a.b'"),
    ({"S4_NOTIFY_MAX_ATTEMPTS": "0"}, "S4_NOTIFY_MAX_ATTEMPTS"),
    ({"S4_NOTIFY_OTHER": "1"}, "S4_NOTIFY_OTHER"),
    ({"S4_MODE": "gateway", "S4_NOTIFY_WEBHOOK_ENDPOINT_g": "http://h/"}, "a gateway delivers no notifications"),
])
def test_bad_notify_settings_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env=env)


def test_a_webhook_table_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[notify.webhook.a]\nendpoint = "http://h/"\nurl = "x"\n')
    with pytest.raises(ConfigError, match="notify.webhook.a"):
        load_settings(env={}, config_path=str(cfg))
