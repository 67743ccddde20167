"""A small WebSocket test client on the ``websockets`` package, as seed 003's example uses it."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import websockets


class Subscriber:
    """One connection to ``/api/ws`` that collects every message it receives."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, query: str = "") -> None:
        self.url = url.replace("http://", "ws://") + "/api/ws" + query
        self.headers = headers or {}
        self.messages: list[dict[str, Any]] = []
        self.ws: Any = None

    async def __aenter__(self) -> Subscriber:
        self.ws = await websockets.connect(self.url, max_size=None, additional_headers=self.headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, message: dict[str, Any] | str) -> None:
        """Send a message (a dict as JSON, a string as is)."""
        await self.ws.send(message if isinstance(message, str) else orjson.dumps(message).decode())

    async def subscribe(self, pattern: str, **fields: Any) -> dict[str, Any]:
        """Subscribe and wait for the acknowledgement."""
        await self.send({"type": "subscribe", "entity_id": pattern, **fields})
        return await self.next_of("subscribed")

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message."""
        message = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.messages.append(message)
        return message  # type: ignore[no-any-return]

    async def next_of(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next message of type ``kind`` (others are kept in :attr:`messages`)."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            if message["type"] == kind:
                return message

    async def collect(
        self, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0, skip_metrics: bool = True
    ) -> list[dict[str, Any]]:
        """Messages received from now on until ``until(received)`` holds (metrics left out by default)."""
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not until(received):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; received {received!r}")
            message = await self.recv(remaining)
            if not (skip_metrics and message["type"] == "metrics_update"):
                received.append(message)
        return received

    async def closed(self, timeout: float = 10.0) -> tuple[int, str]:
        """Read (and keep) messages until the server closes the connection: its close code and reason."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                await self.recv(max(0.01, deadline - time.monotonic()))
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code, closed.rcvd.reason

    async def quiet_for(self, seconds: float) -> list[dict[str, Any]]:
        """Messages (metrics left out) that arrive within ``seconds``."""
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = await self.recv(remaining)
            except TimeoutError:
                break
            if message["type"] != "metrics_update":
                received.append(message)
        return received


class StuckClient:
    """A WebSocket client that subscribes and then stops reading, as a hung process would.

    It speaks the protocol over a plain socket with a tiny receive buffer, so nothing on the client
    side soaks up what the server sends; :meth:`read_until_close` later reads what was buffered and
    returns the close frame's code and reason.
    """

    def __init__(self, url: str) -> None:
        parsed = urlsplit(url)
        self.address = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.buffer = bytearray()

    def subscribe(self, pattern: str) -> None:
        """Open the WebSocket and send one subscribe; read nothing back."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(self.address)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /api/ws HTTP/1.1\r\nHost: {self.address[0]}:{self.address[1]}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.sock.settimeout(10)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buffer = bytearray(rest)
        self.sock.sendall(self._masked_text(orjson.dumps({"type": "subscribe", "entity_id": pattern})))

    @staticmethod
    def _masked_text(payload: bytes) -> bytes:
        mask = os.urandom(4)
        length = len(payload)
        header = bytes([0x81, 0x80 | length]) if length < 126 else bytes([0x81, 0xFE]) + struct.pack("!H", length)
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def read_until_close(self, timeout: float = 30.0) -> tuple[int, str, int]:
        """Read everything up to the server's close frame: (code, reason, data frames before it)."""
        self.sock.settimeout(timeout)
        buffer = self.buffer
        frames = 0
        while True:
            while len(buffer) < 2:
                buffer += self._recv()
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                while len(buffer) < 4:
                    buffer += self._recv()
                length, start = struct.unpack("!H", buffer[2:4])[0], 4
            elif length == 127:
                while len(buffer) < 10:
                    buffer += self._recv()
                length, start = struct.unpack("!Q", buffer[2:10])[0], 10
            while len(buffer) < start + length:
                buffer += self._recv()
            payload, buffer = bytes(buffer[start : start + length]), buffer[start + length :]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode(), frames
            frames += 1

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection without a close frame")
        return chunk

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
