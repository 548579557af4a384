"""S4_CONSOLE_BIND / config.toml server.console_bind: host:port or off, validated at start-up."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from s4.tools.config import ConfigError, load_settings


def test_console_bind_default_is_the_spec_port() -> None:
    assert load_settings(env={}).console_host_port == ("127.0.0.1", 3000)


@pytest.mark.parametrize("value", ["off", "OFF", " off "])
def test_console_bind_off(value: str) -> None:
    assert load_settings(env={"S4_CONSOLE_BIND": value}).console_host_port is None


def test_console_bind_from_file_and_env(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[server]\nconsole_bind = "0.0.0.0:3100"\n')
    assert load_settings(env={}, config_path=str(config)).console_host_port == ("0.0.0.0", 3100)
    env = {"S4_CONSOLE_BIND": "[::1]:3200"}
    assert load_settings(env=env, config_path=str(config)).console_host_port == ("::1", 3200)


@pytest.mark.parametrize("value", ["3000", "localhost", "host:port", "127.0.0.1:70000", ""])
def test_console_bind_malformed_stops_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="S4_CONSOLE_BIND"):
        load_settings(env={"S4_CONSOLE_BIND": value})


@pytest.mark.parametrize("bind, console", [("127.0.0.1:9000", "127.0.0.1:9000"), ("0.0.0.0:9000", "127.0.0.1:9000"),
                                           ("127.0.0.1:9000", "0.0.0.0:9000")])
def test_console_bind_on_the_s3_port_refused(bind: str, console: str) -> None:
    with pytest.raises(ConfigError, match="S4_CONSOLE_BIND: .* is the S3 port"):
        load_settings(env={"S4_BIND": bind, "S4_CONSOLE_BIND": console})


def test_console_bind_beside_the_s3_port() -> None:
    settings = load_settings(env={"S4_BIND": "127.0.0.1:9000", "S4_CONSOLE_BIND": "127.0.0.2:9000"})
    assert settings.console_host_port == ("127.0.0.2", 9000)


def test_console_off_binds_nothing_and_a_busy_port_is_told_not_raised() -> None:
    from s4.tools.server import _bind_console

    assert _bind_console(load_settings(env={"S4_CONSOLE_BIND": "off"})) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = load_settings(env={"S4_CONSOLE_BIND": f"127.0.0.1:{taken.getsockname()[1]}"})
        assert _bind_console(busy) is None and busy.values["console_problem"]  # logged after the banner
    free = _bind_console(load_settings(env={"S4_CONSOLE_BIND": "127.0.0.1:0"}))
    assert free is not None
    with free:
        assert free.get_inheritable()  # the supervisor passes it to its workers
