"""The synchronous client: one blocking socket, no threads.

A :class:`Client` is one connection to one match server, opened on first
use and reopened when the server drains it or the link drops. It is not
thread-safe; give each thread its own (connections are cheap), or use
:class:`roster_client.aio.AsyncClient` for many calls in flight.
"""

from __future__ import annotations

import os
import socket
import ssl as _ssl
import time
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from . import _protocol as wire
from ._protocol import Event, GoAway, Ping, PrefaceReceived, Protocol, Response
from .errors import (
    ConnectionFailedError,
    DeadlineExceededError,
    ProtocolError,
    RosterError,
    StatusCode,
    UnavailableError,
    error_for,
)
from .results import MatchAdvertisersResult, MatchManyResult, MatchResult

HashLike = Union[bytes, bytearray, memoryview, str]
DEFAULT_ADDRESS = "127.0.0.1:7401"


def split_address(address: str) -> Tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) into its parts."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not host:port: {address!r}")
    return host.strip("[]"), int(port)


def client_metadata(token: Optional[str], metadata: Sequence[Tuple[str, str]]) -> bytes:
    pairs = list(metadata)
    if token:
        pairs.insert(0, ("authorization", f"Bearer {token}"))
    return wire.encode_metadata(pairs)


def prepare_ssl(context: Optional[_ssl.SSLContext]) -> Optional[_ssl.SSLContext]:
    """Offers ALPN ``roster/1`` on the caller's context (docs/PROTOCOL.md §0)."""
    if context is not None:
        context.set_alpn_protocols(["roster/1"])
    return context


class _Connection:
    """A socket and its protocol state."""

    def __init__(self, address: str, ssl_context: Optional[_ssl.SSLContext], server_hostname: Optional[str],
                 connect_timeout: float) -> None:
        host, port = split_address(address)
        self.address = address
        self.protocol = Protocol()
        self.pending: Dict[int, Optional[Response]] = {}
        self.closed = False
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as error:
            raise ConnectionFailedError(f"cannot connect to {address}: {error.strerror or error}") from error
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
            sock.sendall(wire.PREFACE)
            self.sock = sock
            # Wait for the server's preface: with TLS 1.3 a refused client
            # certificate shows only now, and a wrong peer shows here.
            deadline = time.monotonic() + connect_timeout
            while True:
                events = self._receive(deadline, f"the preface of {address}")
                if any(isinstance(e, PrefaceReceived) for e in events):
                    self._handle(events)
                    break
        except _ssl.SSLError as error:
            sock.close()
            raise ConnectionFailedError(f"TLS with {address} failed: {error.reason or error}") from error
        except OSError as error:
            sock.close()
            raise ConnectionFailedError(f"cannot talk to {address}: {error.strerror or error}") from error
        except RosterError:
            sock.close()
            raise

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as error:
            self.close()
            raise ConnectionFailedError(f"the connection to {self.address} was lost: {error.strerror or error}") from error

    def _receive(self, deadline: float, waiting_for: str) -> List[Event]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(f"no answer from {self.address} in time ({waiting_for})")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 18)
        except socket.timeout:
            raise DeadlineExceededError(f"no answer from {self.address} in time ({waiting_for})") from None
        except OSError as error:
            self.close()
            raise ConnectionFailedError(f"the connection to {self.address} was lost: {error.strerror or error}") from error
        if not data:
            self.close()
            raise ConnectionFailedError(f"{self.address} closed the connection")
        try:
            return self.protocol.feed(data)
        except ProtocolError:
            self.close()
            raise

    def _handle(self, events: List[Event]) -> None:
        for event in events:
            if isinstance(event, Response):
                if event.call_id in self.pending:
                    self.pending[event.call_id] = event
                # else: a late answer to a call given up on: dropped.
            elif isinstance(event, Ping):
                if not event.ack:
                    # The drain handshake waits for this ACK (PROTOCOL.md §3).
                    self.send(wire.ping_frame(event.opaque, ack=True))
            elif isinstance(event, GoAway):
                if event.code != StatusCode.OK:
                    self.close()
                    raise error_for(StatusCode.UNAVAILABLE if event.code == StatusCode.OK else event.code,
                                    f"{self.address} closed the connection: {event.message}")

    def wait(self, call_id: int, deadline: float) -> Response:
        """Reads until the RESPONSE to ``call_id``; on the deadline, CANCEL."""
        while self.pending.get(call_id) is None:
            try:
                events = self._receive(deadline, f"call {call_id}")
            except DeadlineExceededError:
                self.pending.pop(call_id, None)
                if not self.closed:
                    self.send(wire.cancel_frame(call_id))
                raise
            self._handle(events)
        response = self.pending.pop(call_id)
        assert response is not None
        return response


class ClientOptions:
    """What both clients are configured with (see :class:`Client`)."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, token: Optional[str] = None,
                 ssl_context: Optional[_ssl.SSLContext] = None, server_hostname: Optional[str] = None,
                 timeout: float = 5.0, connect_timeout: float = 5.0, max_attempts: int = 3,
                 metadata: Sequence[Tuple[str, str]] = ()) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_attempts = max(1, max_attempts)
        self._ssl = prepare_ssl(ssl_context)
        self._server_hostname = server_hostname
        self._metadata = client_metadata(token, metadata)


class Client(ClientOptions):
    """A synchronous client of a match server's ``MatchService``.

    ``address`` is ``host:port``. ``token`` is sent as ``authorization:
    Bearer <token>``. ``ssl_context`` turns on TLS (with a client certificate
    loaded into it: mutual TLS); ``server_hostname`` names the host to check
    the certificate against when it is not the one connected to. ``timeout``
    is each call's deadline in seconds: sent to the server and kept here. A
    call refused unprocessed by a draining server is sent again on a new
    connection, and so (being read-only) is a match call whose connection
    dropped, within its deadline.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, **options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(address, **options)
        self._connection: Optional[_Connection] = None

    # MARK: lifecycle

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Says GOAWAY and closes the connection (calls later open a new one)."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            try:
                connection.send(wire.goaway_frame(0, 0, "client closing"))
            except RosterError:
                pass
            connection.close()

    def _connect(self, deadline: float) -> _Connection:
        connection = self._connection
        if connection is not None and (connection.closed or (connection.protocol.draining and not connection.pending)):
            connection.close()
            connection = self._connection = None
        if connection is None or connection.protocol.draining:
            timeout = min(self.connect_timeout, max(0.001, deadline - time.monotonic()))
            connection = self._connection = _Connection(self.address, self._ssl, self._server_hostname, timeout)
        return connection

    # MARK: calls

    def call(self, method: int, message: bytes, *, timeout: Optional[float] = None, idempotent: bool = False) -> bytes:
        """Any unary method by id: the response message's bytes, or the
        call's :class:`RosterError`."""
        seconds = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        timeout_ms = max(1, int(seconds * 1000))
        last: Optional[RosterError] = None
        for _ in range(self.max_attempts):
            connection = self._connect(deadline)
            call_id, frame = connection.protocol.request(method, message, self._metadata, timeout_ms)
            connection.pending[call_id] = None
            try:
                connection.send(frame)
                response = connection.wait(call_id, deadline)
            except ConnectionFailedError as error:
                connection.pending.pop(call_id, None)
                if not idempotent:
                    raise
                last = error
                continue
            if response.status == StatusCode.UNAVAILABLE and response.not_processed:
                last = UnavailableError(response.body.decode("utf-8", "replace"))
                continue
            return response.result()
        assert last is not None
        raise last

    def match(self, advertiser: str, hash: HashLike, *, timeout: Optional[float] = None) -> MatchResult:
        """Whether ``hash`` is in ``advertiser``'s live list: of the list's
        type, an MD5 (16 bytes or 32 hex digits) or a SHA-256 (32 bytes or
        64 digits). NotFoundError if it has none; InvalidArgumentError,
        naming the list's type, for a hash of the other."""
        body = self.call(wire.MATCH, wire.match_request(advertiser.encode(), wire.as_hash(hash)),
                         timeout=timeout, idempotent=True)
        return MatchResult.decode(body)

    def match_many(self, advertiser: str, hashes: Union[bytes, Iterable[HashLike]], *,
                   hash_type: Optional[str] = None, timeout: Optional[float] = None) -> MatchManyResult:
        """One ``MatchMany``: ``hashes`` packed or any iterable of hashes, of
        one type, the list's: MD5 (16 bytes) or SHA-256 (32); at most 100,000
        per call. ``hash_type`` ('md5', 'sha256') says which packed bytes
        hold; unsaid, an iterable's own and packed bytes' the list's. A type
        that is not the list's is InvalidArgumentError, naming the list's."""
        packed, hash_type = wire.pack_hashes(hashes, hash_type)
        message = wire.match_many_request(advertiser.encode(), packed, hash_type)
        return MatchManyResult.decode(self.call(wire.MATCH_MANY, message, timeout=timeout, idempotent=True))

    def match_advertisers(self, hash: HashLike, advertisers: Sequence[str], *, other_hash: Optional[HashLike] = None,
                          timeout: Optional[float] = None) -> MatchAdvertisersResult:
        """One hash against many advertisers' lists (one ``MatchAdvertisers``,
        at most 10,000): each answered in order, None for an advertiser the
        server serves no list of, or whose list holds the other hash type.
        ``other_hash``: the same email's hash of the other type (an MD5 and
        a SHA-256), so that every list is asked with its own."""
        advertisers = list(advertisers)
        other = wire.as_hash(other_hash) if other_hash is not None else b""
        body = self.call(wire.MATCH_ADVERTISERS, wire.match_advertisers_request(wire.as_hash(hash), advertisers, other),
                              timeout=timeout, idempotent=True)
        return MatchAdvertisersResult.decode(advertisers, body)

    def match_each(self, advertiser: str, hashes: Iterable[HashLike], *, window: int = 256,
                   timeout: Optional[float] = None) -> List[bool]:
        """One ``Match`` call per hash, ``window`` of them in flight on the
        connection at a time (pipelined), answers in order. For many hashes
        ``match_many`` is cheaper; this is for callers that want one call
        per key (each answered from the list live when it arrives)."""
        seconds = self.timeout if timeout is None else timeout
        timeout_ms = max(1, int(seconds * 1000))
        prefix = wire.encode_string_bytes(1, advertiser.encode())
        keys = [wire.as_hash(h) for h in hashes]
        answers: List[bool] = [False] * len(keys)
        done = 0
        while done < len(keys):
            deadline = time.monotonic() + seconds
            connection = self._connect(deadline)
            protocol = connection.protocol
            batch = keys[done:done + window]
            ids = []
            frames = []
            for key in batch:
                call_id, frame = protocol.request(wire.MATCH, prefix + wire.encode_string_bytes(2, key), self._metadata, timeout_ms)
                connection.pending[call_id] = None
                ids.append(call_id)
                frames.append(frame)
            try:
                connection.send(b"".join(frames))
                responses = [connection.wait(call_id, deadline) for call_id in ids]
            except ConnectionFailedError:
                for call_id in ids:
                    connection.pending.pop(call_id, None)
                continue  # the window again, on a new connection (read-only calls)
            retry_from = None
            for i, response in enumerate(responses):
                if response.status == StatusCode.UNAVAILABLE and response.not_processed:
                    retry_from = i
                    break
                body = response.result()
                answers[done + i] = body[:2] == b"\x08\x01" if body else False
            done += len(batch) if retry_from is None else retry_from
        return answers

    def match_many_stream(self, advertiser: str, batches: Iterable[Union[bytes, Iterable[HashLike]]], *,
                          in_flight: int = 4, timeout: Optional[float] = None) -> Iterator[MatchManyResult]:
        """One ``MatchMany`` per batch, answers in order, with up to
        ``in_flight`` batches sent ahead of the one being answered: the
        server is never idle waiting for the next batch."""
        seconds = self.timeout if timeout is None else timeout
        timeout_ms = max(1, int(seconds * 1000))
        sent: List[Tuple[Optional[_Connection], int, bytes, Optional[str]]] = []  # connection, call id, packed batch, type

        def send(packed: bytes, hash_type: Optional[str]) -> None:
            message = wire.match_many_request(advertiser.encode(), packed, hash_type)
            try:
                connection = self._connect(time.monotonic() + seconds)
                call_id, frame = connection.protocol.request(wire.MATCH_MANY, message, self._metadata, timeout_ms)
                connection.pending[call_id] = None
                connection.send(frame)
                sent.append((connection, call_id, packed, hash_type))
            except ConnectionFailedError:
                sent.append((None, 0, packed, hash_type))  # asked again, with retries, when its turn comes

        def answer() -> MatchManyResult:
            connection, call_id, packed, hash_type = sent.pop(0)
            if connection is not None:
                try:
                    response = connection.wait(call_id, time.monotonic() + seconds)
                    if not (response.status == StatusCode.UNAVAILABLE and response.not_processed):
                        return MatchManyResult.decode(response.result())
                except ConnectionFailedError:
                    connection.pending.pop(call_id, None)
            # Refused unprocessed or cut off: the one call, with its retries.
            return self.match_many(advertiser, packed, hash_type=hash_type, timeout=timeout)

        for batch in batches:
            send(*wire.pack_hashes(batch))
            if len(sent) > max(0, in_flight - 1):
                yield answer()
        while sent:
            yield answer()

    def membership(self, advertiser: str, hashes: Iterable[HashLike], *, batch_size: int = 1000,
                   in_flight: int = 4, timeout: Optional[float] = None) -> Iterator[bool]:
        """Streams answers for any number of hashes, in order: ``batch_size``
        per ``MatchMany``, ``in_flight`` batches at a time
        (``match_many_stream``), so memory stays a few batches whatever the
        input's size."""
        def batches() -> Iterator[List[bytes]]:
            batch: List[bytes] = []
            for h in hashes:
                batch.append(wire.as_hash(h))
                if len(batch) == batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch

        for result in self.match_many_stream(advertiser, batches(), in_flight=in_flight, timeout=timeout):
            yield from result

    def ping(self, *, timeout: Optional[float] = None) -> float:
        """Round-trip time to the server, in seconds (a PING and its ACK)."""
        seconds = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        connection = self._connect(deadline)
        opaque = os.urandom(8)
        start = time.monotonic()
        connection.send(wire.ping_frame(opaque))
        while True:
            events = connection._receive(deadline, "a PING's answer")
            for event in events:
                if isinstance(event, Ping) and event.ack and event.opaque == opaque:
                    connection._handle([e for e in events if e is not event])
                    return time.monotonic() - start
            connection._handle(events)
