"""The asyncio client: one connection carries any number of calls at once.

Calls are multiplexed by call id; each has its deadline (sent to the server
and kept here with a timer: on expiry the call fails with
DeadlineExceededError and a CANCEL goes out), and cancelling the awaiting
task cancels the call the same way. When the server drains (GOAWAY), new
calls go to a new connection while the old one finishes its own; a call the
server refused unprocessed is sent again there.
"""

from __future__ import annotations

import asyncio
import os
import ssl as _ssl
from typing import AsyncIterator, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _protocol as wire
from ._protocol import GoAway, Ping, PrefaceReceived, Protocol, Response
from .errors import (
    CallCancelledError,
    ConnectionFailedError,
    DeadlineExceededError,
    ProtocolError,
    RosterError,
    StatusCode,
    UnavailableError,
    error_for,
)
from .results import MatchAdvertisersResult, MatchManyResult, MatchResult
from .sync import DEFAULT_ADDRESS, ClientOptions, HashLike, split_address


class _AsyncConnection:
    def __init__(self, address: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.address = address
        self.reader = reader
        self.writer = writer
        self.protocol = Protocol()
        self.pending: Dict[int, "asyncio.Future[Response]"] = {}
        self.pings: Dict[bytes, "asyncio.Future[None]"] = {}
        self.closed = False
        self.error: Optional[RosterError] = None
        self._task: Optional["asyncio.Task[None]"] = None

    @classmethod
    async def open(cls, address: str, ssl_context: Optional[_ssl.SSLContext], server_hostname: Optional[str],
                   timeout: float) -> "_AsyncConnection":
        host, port = split_address(address)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ssl_context,
                                        server_hostname=(server_hostname or host) if ssl_context else None),
                timeout)
        except asyncio.TimeoutError:
            raise ConnectionFailedError(f"cannot connect to {address}: timed out") from None
        except _ssl.SSLError as error:
            raise ConnectionFailedError(f"TLS with {address} failed: {error.reason or error}") from error
        except OSError as error:
            raise ConnectionFailedError(f"cannot connect to {address}: {error.strerror or error}") from error
        connection = cls(address, reader, writer)
        writer.write(wire.PREFACE)
        # The server's preface first: a refused client certificate (TLS 1.3)
        # or a peer that is not Roster shows here, not on the first call.
        try:
            await asyncio.wait_for(connection._read_preface(), timeout)
        except asyncio.TimeoutError:
            connection._close(None)
            raise ConnectionFailedError(f"{address} did not answer the preface in time") from None
        except BaseException:
            connection._close(None)
            raise
        connection._task = asyncio.get_running_loop().create_task(connection._read_loop())
        return connection

    async def _read_preface(self) -> None:
        while True:
            data = await self._read()
            events = self.protocol.feed(data)
            if any(isinstance(e, PrefaceReceived) for e in events):
                self._dispatch(events)
                return

    async def _read(self) -> bytes:
        try:
            data = await self.reader.read(1 << 18)
        except _ssl.SSLError as error:
            raise ConnectionFailedError(f"TLS with {self.address} failed: {error.reason or error}") from error
        except OSError as error:
            raise ConnectionFailedError(f"the connection to {self.address} was lost: {error.strerror or error}") from error
        if not data:
            raise ConnectionFailedError(f"{self.address} closed the connection")
        return data

    async def _read_loop(self) -> None:
        try:
            while not self.closed:
                self._dispatch(self.protocol.feed(await self._read()))
        except RosterError as error:
            self._close(error)
        except asyncio.CancelledError:
            self._close(ConnectionFailedError("the client closed the connection"))

    def _dispatch(self, events: list) -> None:
        for event in events:
            if isinstance(event, Response):
                future = self.pending.pop(event.call_id, None)
                if future is not None and not future.done():
                    future.set_result(event)
                if self.protocol.draining and not self.pending:
                    self._close(None)
            elif isinstance(event, Ping):
                if not event.ack:
                    self.write(wire.ping_frame(event.opaque, ack=True))
                else:
                    waiter = self.pings.pop(event.opaque, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
            elif isinstance(event, GoAway):
                if event.code != StatusCode.OK:
                    raise error_for(event.code, f"{self.address} closed the connection: {event.message}")
                if not self.pending:
                    self._close(None)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    def _close(self, error: Optional[RosterError]) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = error
        failure = error or ConnectionFailedError(f"the connection to {self.address} closed")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(failure)
        self.pending.clear()
        for waiter in self.pings.values():
            if not waiter.done():
                waiter.set_exception(failure)
        self.pings.clear()
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing a broken transport
            pass
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    @property
    def usable(self) -> bool:
        return not self.closed and not self.protocol.draining

    async def call(self, method: int, message: bytes, metadata: bytes, timeout: float) -> Response:
        loop = asyncio.get_running_loop()
        call_id, frame = self.protocol.request(method, message, metadata, max(1, int(timeout * 1000)))
        future: "asyncio.Future[Response]" = loop.create_future()
        self.pending[call_id] = future
        self.writer.write(frame)
        if self.writer.transport.get_write_buffer_size() > 1 << 20:
            await self.writer.drain()
        # A timer rather than asyncio.wait_for: no task per call.
        timer = loop.call_later(timeout, self._expire, call_id, timeout)
        try:
            return await future
        except asyncio.CancelledError:
            if self.pending.pop(call_id, None) is not None:
                self.write(wire.cancel_frame(call_id))
            raise
        finally:
            timer.cancel()

    def _expire(self, call_id: int, timeout: float) -> None:
        future = self.pending.pop(call_id, None)
        if future is not None and not future.done():
            self.write(wire.cancel_frame(call_id))
            future.set_exception(DeadlineExceededError(f"no answer from {self.address} within {timeout:g} s"))

    async def ping(self, timeout: float) -> float:
        loop = asyncio.get_running_loop()
        opaque = os.urandom(8)
        waiter: "asyncio.Future[None]" = loop.create_future()
        self.pings[opaque] = waiter
        start = loop.time()
        self.write(wire.ping_frame(opaque))
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            self.pings.pop(opaque, None)
            raise DeadlineExceededError(f"no PING answer from {self.address} within {timeout:g} s") from None
        return loop.time() - start

    def goodbye(self) -> None:
        self.write(wire.goaway_frame(0, 0, "client closing"))
        self._close(None)


class AsyncClient(ClientOptions):
    """An asyncio client of a match server's ``MatchService``.

    The same options as :class:`roster_client.Client`; many calls may be
    awaited at once on its one connection::

        async with AsyncClient("127.0.0.1:7401", token="c1") as roster:
            answers = await asyncio.gather(*(roster.match("acme", h) for h in hashes))
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, **options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(address, **options)
        self._connection: Optional[_AsyncConnection] = None
        self._opening: Optional["asyncio.Future[_AsyncConnection]"] = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Says GOAWAY and closes the connection; calls in flight fail."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.goodbye()

    async def _connect(self) -> _AsyncConnection:
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        # One opening at a time: calls that arrive meanwhile wait for it.
        if self._opening is None:
            loop = asyncio.get_running_loop()
            self._opening = opening = loop.create_future()
            try:
                connection = await _AsyncConnection.open(self.address, self._ssl, self._server_hostname, self.connect_timeout)
            except BaseException as error:
                self._opening = None
                opening.set_exception(error if isinstance(error, Exception) else ConnectionFailedError("cancelled"))
                opening.exception()  # retrieved: no "never retrieved" warning
                raise
            self._connection = connection
            self._opening = None
            opening.set_result(connection)
            return connection
        return await asyncio.shield(self._opening)

    async def call(self, method: int, message: bytes, *, timeout: Optional[float] = None,
                   idempotent: bool = False) -> bytes:
        """Any unary method by id: the response message's bytes, or the
        call's :class:`RosterError`."""
        seconds = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        last: Optional[RosterError] = None
        for _ in range(self.max_attempts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                connection = await asyncio.wait_for(self._connect(), remaining)
            except asyncio.TimeoutError:
                raise DeadlineExceededError(f"no connection to {self.address} within {seconds:g} s") from None
            try:
                response = await connection.call(method, message, self._metadata, deadline - loop.time())
            except ConnectionFailedError as error:
                if not idempotent:
                    raise
                last = error
                continue
            if response.status == StatusCode.UNAVAILABLE and response.not_processed:
                last = UnavailableError(response.body.decode("utf-8", "replace"))
                continue
            return response.result()
        if last is None:
            raise DeadlineExceededError(f"no answer from {self.address} within {seconds:g} s")
        raise last

    async def match(self, advertiser: str, hash: HashLike, *, timeout: Optional[float] = None) -> MatchResult:
        """Whether ``hash`` is in ``advertiser``'s live list."""
        body = await self.call(wire.MATCH, wire.match_request(advertiser.encode(), wire.as_hash(hash)),
                               timeout=timeout, idempotent=True)
        return MatchResult.decode(body)

    async def match_many(self, advertiser: str, hashes: Union[bytes, Iterable[HashLike]], *,
                         hash_type: Optional[str] = None, timeout: Optional[float] = None) -> MatchManyResult:
        """One ``MatchMany`` (at most 100,000 hashes of one type; as
        :meth:`Client.match_many`)."""
        packed, hash_type = wire.pack_hashes(hashes, hash_type)
        message = wire.match_many_request(advertiser.encode(), packed, hash_type)
        return MatchManyResult.decode(await self.call(wire.MATCH_MANY, message, timeout=timeout, idempotent=True))

    async def match_advertisers(self, hash: HashLike, advertisers: Sequence[str], *, other_hash: Optional[HashLike] = None,
                          timeout: Optional[float] = None) -> MatchAdvertisersResult:
        """One hash against many advertisers' lists (one ``MatchAdvertisers``,
        at most 10,000): each answered in order, None for an advertiser the
        server serves no list of, or whose list holds the other hash type.
        ``other_hash``: the same email's hash of the other type (an MD5 and
        a SHA-256), so that every list is asked with its own."""
        advertisers = list(advertisers)
        other = wire.as_hash(other_hash) if other_hash is not None else b""
        body = await self.call(wire.MATCH_ADVERTISERS, wire.match_advertisers_request(wire.as_hash(hash), advertisers, other),
                              timeout=timeout, idempotent=True)
        return MatchAdvertisersResult.decode(advertisers, body)

    async def membership(self, advertiser: str, hashes: Iterable[HashLike], *, batch_size: int = 1000,
                         in_flight: int = 4, timeout: Optional[float] = None) -> AsyncIterator[bool]:
        """Answers for any number of hashes, in order: ``batch_size`` per
        ``MatchMany`` with up to ``in_flight`` batches outstanding, so memory
        stays a few batches whatever the input's size."""
        queue: List["asyncio.Task[MatchManyResult]"] = []
        batch: List[bytes] = []

        def launch() -> None:
            packed = b"".join(batch)
            queue.append(asyncio.ensure_future(self.match_many(advertiser, packed, hash_type=wire.hash_type_of(batch[0]),
                                                               timeout=timeout)))
            batch.clear()

        try:
            for h in hashes:
                batch.append(wire.as_hash(h))
                if len(batch) == batch_size:
                    launch()
                    if len(queue) >= in_flight:
                        for answer in await queue.pop(0):
                            yield answer
            if batch:
                launch()
            while queue:
                for answer in await queue.pop(0):
                    yield answer
        finally:
            for task in queue:
                task.cancel()

    async def ping(self, *, timeout: Optional[float] = None) -> float:
        """Round-trip time to the server, in seconds."""
        connection = await self._connect()
        return await connection.ping(self.timeout if timeout is None else timeout)
