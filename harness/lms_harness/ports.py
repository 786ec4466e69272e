"""Free local TCP ports for the processes the harness starts (the one copy for tests and benches)."""
from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel reports free right now (all held open until chosen)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One port the kernel reports free right now."""
    return free_ports(1)[0]
