"""Settings: env over config.toml over defaults; unknown or malformed settings are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.tools.config import ConfigError, load_settings, parse_size, resolve_data_dir


def test_defaults_follow_the_spec() -> None:
    s = load_settings(env={})
    assert s.bind == "127.0.0.1:9000"
    assert s.max_upload_bytes == 5 * 1024**3
    assert s.root_username == "root" and s.root_password is None
    assert s.lifecycle_enabled is True and s.lifecycle_interval_hours == 24.0
    assert s.compaction_threshold == 0.3 and s.compaction_full_time == "02:00"
    assert s.select_max_memory == 256 * 1024**2 and s.select_timeout_s == 60
    assert (s.replication_factor, s.write_quorum, s.read_quorum) == (3, 2, 2)
    assert s.volume_size_bytes == 1024**3


@pytest.mark.parametrize(("text", "size"), [("5GB", 5 * 1024**3), ("5G", 5 * 1024**3), ("100MB", 100 * 1024**2),
                                            ("1024KB", 1024**2), ("10k", 10 * 1024), ("123", 123)])
def test_size_format(text: str, size: int) -> None:
    assert parse_size("S4_MAX_UPLOAD_SIZE", text) == size


@pytest.mark.parametrize(("env", "named"), [
    ({"S4_MAX_UPLOAD_SIZE": "lots"}, "S4_MAX_UPLOAD_SIZE"),
    ({"S4_LIFECYCLE_ENABLED": "maybe"}, "S4_LIFECYCLE_ENABLED"),
    ({"S4_BIND": "nohost"}, "S4_BIND"),
    ({"S4_SELECT_TIMEOUT": "soon"}, "S4_SELECT_TIMEOUT"),
    ({"S4_COMPACTION_THRESHOLD": "2"}, "S4_COMPACTION_THRESHOLD"),
    ({"S4_MODE": "swarm"}, "S4_MODE"),
    ({"S4_TLS_CERT": "/x.pem"}, "S4_TLS_CERT"),
    ({"S4_VOLUMESIZE": "1GB"}, "S4_VOLUMESIZE"),
])
def test_bad_settings_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env=env)


def test_file_then_env(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[server]\nbind = "0.0.0.0:9100"\n[storage]\ndata_path = "/srv/s4/volumes"\n'
                   "[tuning]\nvolume_size_mb = 64\nstrict_sync = true\n")
    s = load_settings(env={}, config_path=str(cfg))
    assert s.bind == "0.0.0.0:9100" and s.volume_size_bytes == 64 * 1024**2
    assert resolve_data_dir(s) == Path("/srv/s4")
    s = load_settings(env={"S4_BIND": "127.0.0.1:9200", "S4_DATA_DIR": str(tmp_path)}, config_path=str(cfg))
    assert s.bind == "127.0.0.1:9200" and s.sources["bind"] == "env:S4_BIND"
    assert resolve_data_dir(s) == tmp_path


def test_unknown_or_malformed_file_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[tuning]\nvolume_size = 1\n")
    with pytest.raises(ConfigError, match="tuning.volume_size"):
        load_settings(env={}, config_path=str(cfg))
    cfg.write_text("[tuning]\nvolume_size_mb = 'big'\n")
    with pytest.raises(ConfigError, match="volume_size_mb"):
        load_settings(env={}, config_path=str(cfg))
    cfg.write_text("this is not toml [")
    with pytest.raises(ConfigError, match="config"):
        load_settings(env={}, config_path=str(cfg))


def test_iam_settings_from_file_env_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[iam]\nroot_username = "admin"\nroot_password = "file-password-1"\n'
                   'jwt_secret = "file-jwt-secret-0123456789abcdef"\n')
    s = load_settings(env={}, config_path=str(cfg))
    assert (s.root_username, s.root_password, s.jwt_secret) == \
        ("admin", "file-password-1", "file-jwt-secret-0123456789abcdef")
    assert s.sources["root_password"] == "file:iam.root_password" and s.sources["jwt_secret"] == "file:iam.jwt_secret"
    s = load_settings(env={"S4_ROOT_PASSWORD": "env-password-1", "S4_JWT_SECRET": "env-jwt"}, config_path=str(cfg))
    assert (s.root_username, s.root_password, s.jwt_secret) == ("admin", "env-password-1", "env-jwt")
    assert s.sources["root_password"] == "env:S4_ROOT_PASSWORD"
    assert s.sources["root_username"] == "file:iam.root_username"
    s = load_settings(env={"S4_ROOT_USERNAME": "boss"}, config_path=str(cfg))
    assert s.root_username == "boss" and s.root_password == "file-password-1"


def test_iam_settings_default_without_file() -> None:
    s = load_settings(env={})
    assert (s.root_username, s.root_password, s.jwt_secret) == ("root", None, None)


@pytest.mark.parametrize("line", ["root_password = 12345678", "jwt_secret = true", "root_username = ['a']"])
def test_iam_settings_must_be_strings_and_are_not_echoed(tmp_path: Path, line: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[iam]\n{line}\n")
    key = line.split(" ")[0]
    with pytest.raises(ConfigError, match=f"iam.{key}") as err:
        load_settings(env={}, config_path=str(cfg))
    assert "12345678" not in str(err.value)


def test_unknown_iam_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[iam]\nroot_pasword = "typo"\n')
    with pytest.raises(ConfigError, match="iam.root_pasword"):
        load_settings(env={}, config_path=str(cfg))


def test_disk_reserve_setting() -> None:
    assert load_settings(env={}).disk_reserve_bytes is None  # the engine's default: 1% of the disk, <= 256 MiB
    assert load_settings(env={"S4_DISK_RESERVE": "512MB"}).disk_reserve_bytes == 512 * 1024**2
    assert load_settings(env={"S4_DISK_RESERVE": "0"}).disk_reserve_bytes == 0
    with pytest.raises(ConfigError, match="S4_DISK_RESERVE"):
        load_settings(env={"S4_DISK_RESERVE": "lots"})
