"""hypercorn's limits as the server sets them."""

from __future__ import annotations

from pathlib import Path

from collab.config import load_settings
from collab.server import hypercorn_config


def test_a_silent_websocket_is_not_cut_before_the_protocols_idle_limit(tmp_path: Path) -> None:
    # protocol.md lets a client stay silent up to COLLAB_WS_IDLE_TIMEOUT_S (the app then closes with 4002);
    # hypercorn's read timeout applies to WebSockets too and must not cut them first with 1006.
    settings = load_settings(environ={"COLLAB_DATA_DIR": str(tmp_path), "COLLAB_WS_IDLE_TIMEOUT_S": "75"})
    config = hypercorn_config(settings)
    assert config.read_timeout > settings.ws_idle_timeout_s
    assert config.keep_alive_timeout == settings.keep_alive_timeout_s  # idle HTTP keep-alives still go quickly


def test_workers_accept_on_an_inherited_socket(tmp_path: Path) -> None:
    settings = load_settings(environ={"COLLAB_DATA_DIR": str(tmp_path)})
    assert hypercorn_config(settings, listen_fd=7).bind == ["fd://7"]
    assert hypercorn_config(settings).bind == [f"{settings.host}:{settings.port}"]
