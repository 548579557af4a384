"""S4_SSE_C_ALLOW_HTTP / [server] sse_c_allow_http: SSE-C over plain HTTP is refused unless the operator allows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from s4.tools.config import ConfigError, load_settings


def test_sse_c_over_http_is_off_by_default_and_can_be_allowed(tmp_path: Path) -> None:
    assert load_settings({}).sse_c_allow_http is False
    assert load_settings({"S4_SSE_C_ALLOW_HTTP": "true"}).sse_c_allow_http is True
    cfg = tmp_path / "config.toml"
    cfg.write_text("[server]\nsse_c_allow_http = true\n")
    assert load_settings({}, config_path=str(cfg)).sse_c_allow_http is True
    with pytest.raises(ConfigError, match="S4_SSE_C_ALLOW_HTTP"):
        load_settings({"S4_SSE_C_ALLOW_HTTP": "sometimes"})
