"""What the clients do that a healthy server rarely makes them do, against a
scripted server on loopback that speaks the protocol from raw bytes:
deadlines kept locally (and a CANCEL sent), cancellation, a drain's GOAWAY
and NOT_PROCESSED answers retried on a new connection, PINGs answered, and
peers that are not Roster servers."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from typing import Callable, List

import pytest

from roster_client import (
    AsyncClient,
    Client,
    ConnectionFailedError,
    DeadlineExceededError,
    ProtocolError,
    UnavailableError,
)
from roster_client import _protocol as wire


class Peer:
    """A socket of the scripted server: reads whole frames, writes raw ones."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def frame(self):
        length, kind, flags, call_id = wire.HEADER.unpack(self.read_exactly(10))
        return kind, flags, call_id, self.read_exactly(length)

    def respond(self, call_id: int, status: int, body: bytes, flags: int = 0) -> None:
        self.sock.sendall(wire.HEADER.pack(1 + len(body), wire.RESPONSE, flags, call_id) + bytes([status]) + body)


class ScriptedServer:
    """Accepts connections and hands each to ``script(peer, index)`` in a thread."""

    def __init__(self, script: Callable[[Peer, int], None]) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.script = script
        self.errors: List[BaseException] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            index = self.connections
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock, index), daemon=True).start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        peer = Peer(sock)
        try:
            assert peer.read_exactly(8) == wire.PREFACE
            sock.sendall(wire.PREFACE)
            self.script(peer, index)
        except EOFError:
            pass
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.errors.append(error)
        finally:
            sock.close()

    def close(self) -> None:
        self.listener.close()


MATCHED_V3 = b"\x08\x01\x10\x03"


def test_a_deadline_is_kept_locally_and_the_call_cancelled():
    seen = []

    def silent(peer: Peer, index: int) -> None:
        kind, _, call_id, payload = peer.frame()
        method, timeout_ms, _ = wire.REQUEST_HEAD.unpack_from(payload)
        seen.append(("request", call_id, method, timeout_ms))
        kind, _, cancelled, _ = peer.frame()  # the client gives up: CANCEL
        seen.append(("cancel" if kind == wire.CANCEL else kind, cancelled))
        kind, _, call_id, _ = peer.frame()  # the connection is still usable
        peer.respond(call_id, 0, MATCHED_V3)
        peer.frame()

    server = ScriptedServer(silent)
    with Client(server.address, timeout=0.3) as roster:
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            roster.match("acme", bytes(16))
        assert 0.25 < time.monotonic() - start < 2
        assert roster.match("acme", bytes(16)).version == 3
    assert seen[0] == ("request", 1, wire.MATCH, 300), "the deadline is sent as the call's timeout"
    assert seen[1] == ("cancel", 1)
    assert not server.errors


def test_async_deadlines_and_cancellation_send_cancel():
    cancels = []

    def silent(peer: Peer, index: int) -> None:
        while True:
            kind, _, call_id, _ = peer.frame()
            if kind == wire.CANCEL:
                cancels.append(call_id)

    server = ScriptedServer(silent)

    async def run():
        async with AsyncClient(server.address, timeout=0.2) as roster:
            with pytest.raises(DeadlineExceededError):
                await roster.match("acme", bytes(16))
            task = asyncio.ensure_future(roster.match("acme", bytes(16), timeout=10))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.2)

    asyncio.run(run())
    assert cancels == [1, 2]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_drain_refusal_is_retried_on_a_new_connection(asynchronous):
    served = []

    def draining_then_fresh(peer: Peer, index: int) -> None:
        if index == 0:
            kind, _, call_id, _ = peer.frame()
            # A drain: GOAWAY, the drain PING, and the call refused unprocessed.
            peer.sock.sendall(wire.goaway_frame(0, call_id - 1, "server is shutting down")
                              + wire.ping_frame(b"DRAIN\x00\x00\x00"))
            peer.respond(call_id, 14, b"server is draining; retry on a new connection", flags=wire.FLAG_NOT_PROCESSED)
            kind, flags, _, opaque = peer.frame()
            served.append(("drain ping answered", kind == wire.PING and flags & wire.FLAG_ACK == 1 and opaque == b"DRAIN\x00\x00\x00"))
            return
        while True:
            kind, _, call_id, _ = peer.frame()
            if kind == wire.REQUEST:
                served.append(("answered on connection", index))
                peer.respond(call_id, 0, MATCHED_V3)

    server = ScriptedServer(draining_then_fresh)
    if asynchronous:
        async def run():
            async with AsyncClient(server.address) as roster:
                return await roster.match("acme", bytes(16))
        result = asyncio.run(run())
    else:
        with Client(server.address) as roster:
            result = roster.match("acme", bytes(16))
    assert result.matched and result.version == 3
    assert ("answered on connection", 1) in served
    assert ("drain ping answered", True) in served
    assert not server.errors


def test_a_refusal_that_never_ends_is_an_unavailable_error():
    def always_draining(peer: Peer, index: int) -> None:
        kind, _, call_id, _ = peer.frame()
        peer.sock.sendall(wire.goaway_frame(0, 0, "draining"))
        peer.respond(call_id, 14, b"server is draining; retry on a new connection", flags=wire.FLAG_NOT_PROCESSED)
        time.sleep(0.2)

    server = ScriptedServer(always_draining)
    with Client(server.address, max_attempts=3) as roster:
        with pytest.raises(UnavailableError, match="draining"):
            roster.match("acme", bytes(16))
    assert server.connections == 3


def test_a_connection_error_goaway_fails_the_calls_in_flight():
    def broken(peer: Peer, index: int) -> None:
        peer.frame()
        peer.sock.sendall(wire.goaway_frame(8, 1, "frame of 9999999 bytes exceeds the limit"))

    server = ScriptedServer(broken)

    async def run():
        async with AsyncClient(server.address, max_attempts=1) as roster:
            with pytest.raises(Exception) as failed:
                await roster.match("acme", bytes(16))
            assert "exceeds the limit" in str(failed.value)
    asyncio.run(run())


def test_a_peer_that_is_not_roster_is_named():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def http() -> None:
        sock, _ = listener.accept()
        sock.recv(100)
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        time.sleep(0.5)
        sock.close()

    threading.Thread(target=http, daemon=True).start()
    with Client(f"127.0.0.1:{listener.getsockname()[1]}", timeout=2) as roster:
        with pytest.raises(ProtocolError, match="not a Roster server"):
            roster.match("acme", bytes(16))
    listener.close()


def test_frames_split_anywhere_decode_the_same():
    frames = (wire.PREFACE + wire.HEADER.pack(5, wire.RESPONSE, 0, 9) + b"\x00" + MATCHED_V3
              + wire.ping_frame(b"12345678") + wire.goaway_frame(0, 9, "bye"))
    whole = wire.Protocol().feed(frames)
    for cut in range(1, len(frames)):
        protocol = wire.Protocol()
        assert protocol.feed(frames[:cut]) + protocol.feed(frames[cut:]) == whole
    protocol = wire.Protocol(max_frame_size=100)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        protocol.feed(wire.PREFACE + struct.pack(">IBBI", 101, wire.RESPONSE, 0, 1))
