"""The Dockerfile and docker-compose.yml cannot be built here; what they rely on is checked: the entry point is
the package's ``s4-server`` script, and the environment they set is accepted by the server's settings as meant."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import yaml

from s4.tools.config import load_settings, resolve_data_dir

ROOT = Path(__file__).resolve().parents[3]


def _dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in shlex.split(line[4:]))
    return env


def _compose_env() -> dict[str, str]:
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["s4core"]
    # "${NAME:-}" unset on the host: compose passes an empty string
    return {k: re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", v)
            for k, v in (item.split("=", 1) for item in service["environment"])}


def test_dockerfile_runs_the_package_entry_point() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["s4-server"]' in text
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["s4-server"] == "s4.tools.server:main"
    assert "USER s4" in text and 'VOLUME ["/data"]' in text and "EXPOSE 9000 3000" in text


def test_container_environment_is_accepted_as_meant() -> None:
    env = {**_dockerfile_env(), **_compose_env()}
    settings = load_settings(env=env)
    assert settings.host_port == ("0.0.0.0", 9000)
    assert settings.console_host_port == ("0.0.0.0", 3000)
    assert str(resolve_data_dir(settings)) == "/data"
    assert not settings.root_password  # S4_ROOT_PASSWORD unset on the host: IAM off, as the spec's compose file


def test_compose_publishes_both_ports() -> None:
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["s4core"]
    assert set(service["ports"]) == {"9000:9000", "3000:3000"} and service["volumes"] == ["s4-data:/data"]
