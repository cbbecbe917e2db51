"""Clients of a tier of match servers: each call goes to a server that holds
the advertiser's live list, and to the next one when that server cannot
answer, all within the call's one deadline (as the Swift ``TierClient``).

Where each advertiser is served comes from the coordinator's
``Tier.Placement`` (with the application's client token), asked once per
advertiser and cached; asked again after ``placement_lifetime``, when every
listed server failed or lacked the list (NOT_FOUND: it moved), and when a
server answers from an older version than the placement named. The time left
is split evenly over the servers still to try, so a server that hangs leaves
time for the next; a server that failed is tried last for ``suspicion``
seconds.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

from . import _protocol as wire
from ._proto import tier_pb2
from .aio import AsyncClient
from .errors import (
    ConnectionFailedError,
    DeadlineExceededError,
    NotFoundError,
    RosterError,
    StatusCode,
    UnavailableError,
)
from .results import MatchManyResult, MatchResult
from .sync import Client, HashLike

T = TypeVar("T")

#: Codes after which another server may answer: it is down or cut off, or
#: does not hold the list (it moved, or restarted without it).
TRY_NEXT = {StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED, StatusCode.NOT_FOUND}


@dataclass
class Route:
    """Where one advertiser is served: the live version and, in the order to
    try them, the addresses of the servers holding it."""

    advertiser: str
    version: int
    addresses: List[str]
    expires: float
    #: The holders the coordinator has heard from lately (in order): tried
    #: before the others.
    healthy: List[str]


class _Router:
    """The routing decisions, shared by the sync and asyncio clients."""

    def __init__(self, placement_lifetime: float, suspicion: float) -> None:
        self.placement_lifetime = placement_lifetime
        self.suspicion = suspicion
        self.routes: Dict[str, Route] = {}
        self.suspects: Dict[str, float] = {}
        #: Placement calls made so far (tests check the cache is used).
        self.placement_calls = 0

    def cached(self, advertiser: str, now: float) -> Optional[Route]:
        route = self.routes.get(advertiser)
        return route if route is not None and route.expires > now else None

    def learn(self, advertiser: str, answer: bytes, now: float) -> Route:
        self.placement_calls += 1
        placement = tier_pb2.PlacementResponse.FromString(answer)
        if not placement.advertisers:
            raise UnavailableError(f"the coordinator placed no advertiser (asked about '{advertiser}')")
        entry = placement.advertisers[0]
        holders = [placement.nodes[i] for i in entry.nodes if i < len(placement.nodes)]
        if entry.version == 0:
            raise NotFoundError(f"advertiser '{advertiser}' has no published list")
        if not holders:
            raise UnavailableError(f"no server of the tier holds version {entry.version} of '{advertiser}' now")
        # Holders the coordinator has not heard from lately go last.
        healthy = [n.address for n in holders if n.healthy]
        addresses = healthy + [n.address for n in holders if not n.healthy]
        route = Route(advertiser, entry.version, addresses, now + self.placement_lifetime, healthy)
        self.routes[advertiser] = route
        return route

    def ordered(self, route: Route, now: float) -> List[str]:
        """Servers that failed lately go last, in their order."""
        for address, until in list(self.suspects.items()):
            if until <= now:
                del self.suspects[address]
        good = [a for a in route.addresses if a not in self.suspects]
        return good + [a for a in route.addresses if a in self.suspects]

    def failed(self, address: str, now: float) -> None:
        self.suspects[address] = now + self.suspicion

    def answered(self, route: Route, version: int) -> None:
        if version < route.version:
            # It came back without the newest version: ask where it is again.
            self.routes.pop(route.advertiser, None)

    @staticmethod
    def placement_request(advertiser: str) -> bytes:
        return tier_pb2.PlacementRequest(advertiser_ids=[advertiser]).SerializeToString()


def _addresses(value: Union[str, Sequence[str]]) -> List[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    out = [a.strip() for a in items if a.strip()]
    if not out:
        raise ValueError("no coordinator address")
    return out


class TierClient:
    """A synchronous client of a tier. ``coordinators``: ``"a:7400,b:7400"``
    (the leader among them answers placement); ``token``: the application's
    client token, used for both the coordinator and the match servers."""

    def __init__(self, coordinators: Union[str, Sequence[str]], *, token: Optional[str] = None,
                 ssl_context: Optional[_ssl.SSLContext] = None, server_hostname: Optional[str] = None,
                 timeout: float = 5.0, connect_timeout: float = 2.0, placement_lifetime: float = 30.0,
                 suspicion: float = 5.0) -> None:
        self.timeout = timeout
        self._options = dict(token=token, ssl_context=ssl_context, server_hostname=server_hostname,
                             connect_timeout=connect_timeout, max_attempts=1)
        self._coordinators = [Client(a, **self._options) for a in _addresses(coordinators)]
        self._servers: Dict[str, Client] = {}
        self._router = _Router(placement_lifetime, suspicion)

    @property
    def placement_calls(self) -> int:
        return self._router.placement_calls

    def __enter__(self) -> "TierClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in self._coordinators + list(self._servers.values()):
            client.close()

    def route(self, advertiser: str, *, refresh: bool = False, timeout: Optional[float] = None) -> Route:
        """The servers for ``advertiser``, from the cache or the coordinator."""
        now = time.monotonic()
        route = None if refresh else self._router.cached(advertiser, now)
        if route is not None:
            return route
        seconds = self.timeout if timeout is None else timeout
        last: Optional[RosterError] = None
        for coordinator in self._coordinators:
            try:
                answer = coordinator.call(wire.TIER_PLACEMENT, _Router.placement_request(advertiser), timeout=seconds)
                return self._router.learn(advertiser, answer, time.monotonic())
            except (UnavailableError, DeadlineExceededError) as error:
                last = error  # not the leader, or down: the next one
        assert last is not None
        raise last

    def _server(self, address: str) -> Client:
        client = self._servers.get(address)
        if client is None:
            client = self._servers[address] = Client(address, **self._options)
        return client

    def _call(self, advertiser: str, timeout: Optional[float], run: Callable[[Client, float], T],
              version: Callable[[T], int]) -> T:
        seconds = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        last: Optional[RosterError] = None
        for refresh in (False, True):
            route = self.route(advertiser, refresh=refresh, timeout=max(0.001, deadline - time.monotonic()))
            addresses = self._router.ordered(route, time.monotonic())
            for index, address in enumerate(addresses):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise last or DeadlineExceededError(f"no server answered for '{advertiser}' within {seconds:g} s")
                try:
                    answer = run(self._server(address), remaining / (len(addresses) - index))
                except RosterError as error:
                    if error.code not in TRY_NEXT:
                        raise
                    self._router.failed(address, time.monotonic())
                    last = error
                    continue
                self._router.answered(route, version(answer))
                return answer
        assert last is not None
        raise last

    def match(self, advertiser: str, hash: HashLike, *, timeout: Optional[float] = None) -> MatchResult:
        return self._call(advertiser, timeout, lambda c, t: c.match(advertiser, hash, timeout=t), lambda r: r.version)

    def match_many(self, advertiser: str, hashes: Union[bytes, Iterable[HashLike]], *,
                   timeout: Optional[float] = None) -> MatchManyResult:
        packed = wire.pack_hashes(hashes)
        return self._call(advertiser, timeout, lambda c, t: c.match_many(advertiser, packed, timeout=t), lambda r: r.version)


class AsyncTierClient:
    """The asyncio form of :class:`TierClient`, with the same options."""

    def __init__(self, coordinators: Union[str, Sequence[str]], *, token: Optional[str] = None,
                 ssl_context: Optional[_ssl.SSLContext] = None, server_hostname: Optional[str] = None,
                 timeout: float = 5.0, connect_timeout: float = 2.0, placement_lifetime: float = 30.0,
                 suspicion: float = 5.0) -> None:
        self.timeout = timeout
        self._options = dict(token=token, ssl_context=ssl_context, server_hostname=server_hostname,
                             connect_timeout=connect_timeout, max_attempts=1)
        self._coordinators = [AsyncClient(a, **self._options) for a in _addresses(coordinators)]
        self._servers: Dict[str, AsyncClient] = {}
        self._router = _Router(placement_lifetime, suspicion)

    @property
    def placement_calls(self) -> int:
        return self._router.placement_calls

    async def __aenter__(self) -> "AsyncTierClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for client in self._coordinators + list(self._servers.values()):
            await client.close()

    async def route(self, advertiser: str, *, refresh: bool = False, timeout: Optional[float] = None) -> Route:
        loop = asyncio.get_running_loop()
        route = None if refresh else self._router.cached(advertiser, loop.time())
        if route is not None:
            return route
        seconds = self.timeout if timeout is None else timeout
        last: Optional[RosterError] = None
        for coordinator in self._coordinators:
            try:
                answer = await coordinator.call(wire.TIER_PLACEMENT, _Router.placement_request(advertiser), timeout=seconds)
                return self._router.learn(advertiser, answer, loop.time())
            except (UnavailableError, DeadlineExceededError) as error:
                last = error
        assert last is not None
        raise last

    def _server(self, address: str) -> AsyncClient:
        client = self._servers.get(address)
        if client is None:
            client = self._servers[address] = AsyncClient(address, **self._options)
        return client

    async def _call(self, advertiser: str, timeout: Optional[float], run, version):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        seconds = self.timeout if timeout is None else timeout
        deadline = loop.time() + seconds
        last: Optional[RosterError] = None
        for refresh in (False, True):
            route = await self.route(advertiser, refresh=refresh, timeout=max(0.001, deadline - loop.time()))
            addresses = self._router.ordered(route, loop.time())
            for index, address in enumerate(addresses):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise last or DeadlineExceededError(f"no server answered for '{advertiser}' within {seconds:g} s")
                try:
                    answer = await run(self._server(address), remaining / (len(addresses) - index))
                except RosterError as error:
                    if error.code not in TRY_NEXT:
                        raise
                    self._router.failed(address, loop.time())
                    last = error
                    continue
                self._router.answered(route, version(answer))
                return answer
        assert last is not None
        raise last

    async def match(self, advertiser: str, hash: HashLike, *, timeout: Optional[float] = None) -> MatchResult:
        return await self._call(advertiser, timeout, lambda c, t: c.match(advertiser, hash, timeout=t), lambda r: r.version)

    async def match_many(self, advertiser: str, hashes: Union[bytes, Iterable[HashLike]], *,
                         timeout: Optional[float] = None) -> MatchManyResult:
        packed = wire.pack_hashes(hashes)
        return await self._call(advertiser, timeout, lambda c, t: c.match_many(advertiser, packed, timeout=t),
                                lambda r: r.version)
