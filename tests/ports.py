"""A free TCP port on the loopback for a server a test starts (the metrics exporter, a
Ray head). Another process may take it between the call and the server's bind; the tests
that use it start their server right after."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
