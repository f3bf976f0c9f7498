"""Fixtures shared by more than one test file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from aqmllmd.control import ControlPlane
    from aqmllmd.ctl import Client
    from aqmllmd.server import Server


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[ControlPlane, Client, Server]]:
    """aqmllmd's control plane on an ipc socket in tmp_path, with the Server it controls
    (no channel attached) and a Client: (ControlPlane, Client, Server)."""
    # Imported here: the daemon's modules (ONNX Runtime) load only for tests using it.
    from aqmllmd.config import load
    from aqmllmd.control import ControlPlane
    from aqmllmd.ctl import Client
    from aqmllmd.default_model import INTERIM_MODEL
    from aqmllmd.metrics import Metrics
    from aqmllmd.model import load as load_model
    from aqmllmd.server import Server

    endpoint = f"ipc://{tmp_path}/ctl.sock"
    cfg = load(None, {"channel": str(tmp_path / "none"), "control": endpoint, "metrics": ""})
    server = Server(cfg, load_model(INTERIM_MODEL), Metrics(lambda: None))
    cp = ControlPlane(server, endpoint)
    cp.start()
    client = Client(endpoint, timeout_ms=3000)
    try:
        yield cp, client, server
    finally:
        server.stop_event.set()
        client.close()
        cp.stop()
