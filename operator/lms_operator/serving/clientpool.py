"""Load spread over several gRPC connections, each replaced every few seconds.

One tritonclient aio client is one HTTP/2 connection, and a Kubernetes Service balances
connections, not requests: a client that never reconnects stays on the replica it first
reached, so load never moves to a replica added later. Triton has no server-side maximum
connection age, so the client ages its own connections: after `reconnect_s` a slot's client
is replaced, new requests go to the fresh one (a new TCP connection the Service places), and
the old one is closed only once its in-flight requests have answered, so no request fails
because its connection was recycled.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_IDS = itertools.count(1)


def channel_args(connection_id: int) -> list[tuple[str, Any]]:
    """tritonclient's default channel options plus a private subchannel pool.

    gRPC shares one TCP connection among channels with equal target and options (the global
    subchannel pool); a local pool and a distinct option give every client its own connection.
    """
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.use_local_subchannel_pool", 1),
        ("lms.connection_id", connection_id),
    ]


def grpc_client_factory(url: str) -> Callable[[], Any]:
    """A factory of tritonclient.grpc.aio clients to `url`, each on its own connection."""

    def make() -> Any:
        import tritonclient.grpc.aio as grpcclient

        return grpcclient.InferenceServerClient(url, channel_args=channel_args(next(_IDS)))

    return make


@dataclass(eq=False)
class Connection:
    """One client with its in-flight count; retired ones are closed when that count reaches zero."""

    client: Any
    expires: float
    inflight: int = 0
    retired: bool = False
    requests: int = 0


@dataclass(eq=False)
class ClientPool:
    """`connections` client slots; worker i uses slot i % connections.

    `reconnect_s` None keeps each client for the whole run. The first generation's ages are
    staggered over one period so the slots do not all reconnect at the same moment.
    `shared`, when given, is the one client of a one-slot pool without reconnects (never closed here).
    """

    factory: Callable[[], Any]
    connections: int = 1
    reconnect_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    shared: Any = None
    opened: int = 0
    _slots: list[Connection | None] = field(default_factory=list)
    _closing: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError(f"connections must be at least 1, got {self.connections}")
        if self.reconnect_s is not None and self.reconnect_s <= 0:
            raise ValueError(f"reconnect_s must be positive, got {self.reconnect_s}")
        self._slots = [None] * self.connections

    def _open(self, slot: int, now: float) -> Connection:
        if self.shared is not None and self.connections == 1 and self.reconnect_s is None:
            client = self.shared
        else:
            client = self.factory()
        first = self.opened < self.connections
        self.opened += 1
        if self.reconnect_s is None:
            expires = float("inf")
        elif first:
            expires = now + self.reconnect_s * (1.0 + slot / self.connections)
        else:
            expires = now + self.reconnect_s
        conn = Connection(client, expires)
        self._slots[slot] = conn
        return conn

    def acquire(self, worker: int) -> Connection:
        """The client worker `worker` sends its next request on (replacing an aged one first)."""
        slot = worker % self.connections
        now = self.clock()
        conn = self._slots[slot]
        if conn is not None and now >= conn.expires:
            conn.retired = True
            self._maybe_close(conn)
            conn = None
        if conn is None:
            conn = self._open(slot, now)
        conn.inflight += 1
        conn.requests += 1
        return conn

    def release(self, conn: Connection) -> None:
        conn.inflight -= 1
        self._maybe_close(conn)

    def _maybe_close(self, conn: Connection) -> None:
        if conn.retired and conn.inflight == 0 and conn.client is not self.shared:
            task = asyncio.ensure_future(conn.client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every client this pool opened (after the run: nothing is in flight)."""
        for conn in self._slots:
            if conn is not None and not conn.retired:
                conn.retired = True
                if conn.client is not self.shared:
                    self._closing.add(asyncio.ensure_future(conn.client.close()))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self._closing.clear()
