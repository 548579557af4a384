"""The connection-limit, proxy and access-log settings (issue 18): defaults, env, config.toml, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.tools.config import ConfigError, load_settings


def test_issue18_limit_defaults() -> None:
    s = load_settings(env={})
    assert (s.max_header_bytes, s.header_timeout_s, s.body_timeout_s, s.max_connections) == (16384, 30.0, 30.0, 1024)
    assert s.trusted_proxies == () and s.access_log is True


def test_issue18_limits_from_env_and_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[server]\nmax_header_size = "32KB"\nheader_timeout_secs = 5\nbody_timeout_secs = 7.5\n'
                    'max_connections = 10\ntrusted_proxies = ["10.0.0.0/8", "192.168.1.1"]\naccess_log = false\n')
    s = load_settings(env={}, config_path=str(path))
    assert (s.max_header_bytes, s.header_timeout_s, s.body_timeout_s, s.max_connections) == (32768, 5.0, 7.5, 10)
    assert s.trusted_proxies == ("10.0.0.0/8", "192.168.1.1") and s.access_log is False
    s = load_settings(env={"S4_TRUSTED_PROXIES": " 127.0.0.1, ::1 ,", "S4_ACCESS_LOG": "on",
                           "S4_HEADER_TIMEOUT_SECS": "0.5"}, config_path=str(path))
    assert s.trusted_proxies == ("127.0.0.1", "::1") and s.access_log is True and s.header_timeout_s == 0.5


@pytest.mark.parametrize(("env", "named"), [
    ({"S4_TRUSTED_PROXIES": "proxy.local"}, "S4_TRUSTED_PROXIES"),
    ({"S4_HEADER_TIMEOUT_SECS": "0"}, "S4_HEADER_TIMEOUT_SECS"),
    ({"S4_BODY_TIMEOUT_SECS": "-1"}, "S4_BODY_TIMEOUT_SECS"),
    ({"S4_MAX_CONNECTIONS": "0"}, "S4_MAX_CONNECTIONS"),
    ({"S4_MAX_HEADER_SIZE": "100"}, "S4_MAX_HEADER_SIZE"),
    ({"S4_ACCESS_LOG": "loud"}, "S4_ACCESS_LOG"),
])
def test_issue18_bad_limits_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env=env)


def test_log_level_is_a_known_setting() -> None:
    """S4_LOG_LEVEL is what s4-server's --log-level defaults to; it used to stop start-up as an unknown variable."""
    assert load_settings(env={}).log_level == "info"
    assert load_settings(env={"S4_LOG_LEVEL": "DEBUG"}).log_level == "debug"
    with pytest.raises(ConfigError, match="S4_LOG_LEVEL"):
        load_settings(env={"S4_LOG_LEVEL": "loud"})
