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
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

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
from .results import MatchAdvertisersResult, MatchManyResult, MatchResult
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


#: An advertiser's answer in a tier-wide MatchAdvertisers when its list
#: holds a hash type the call gave none of.
WRONG_TYPE: Any = object()


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

    def learn_many(self, answer: bytes, now: float) -> Dict[str, Route]:
        """Every advertiser of a Placement answer (version 0: no list), cached."""
        self.placement_calls += 1
        placement = tier_pb2.PlacementResponse.FromString(answer)
        out: Dict[str, Route] = {}
        for entry in placement.advertisers:
            holders = [placement.nodes[i] for i in entry.nodes if i < len(placement.nodes)]
            # Holders the coordinator has not heard from lately go last.
            healthy = [n.address for n in holders if n.healthy]
            addresses = healthy + [n.address for n in holders if not n.healthy]
            route = Route(entry.advertiser_id, entry.version, addresses, now + self.placement_lifetime, healthy)
            self.routes[entry.advertiser_id] = route
            out[entry.advertiser_id] = route
        return out

    def learn(self, advertiser: str, answer: bytes, now: float) -> Route:
        route = self.learn_many(answer, now).get(advertiser)
        if route is None:
            raise UnavailableError(f"the coordinator placed no advertiser (asked about '{advertiser}')")
        if route.version == 0:
            self.routes.pop(advertiser, None)
            raise NotFoundError(f"advertiser '{advertiser}' has no published list")
        if not route.addresses:
            raise UnavailableError(f"no server of the tier holds version {route.version} of '{advertiser}' now")
        return route

    def split_cached(self, advertisers: Sequence[str], refresh: bool, now: float) -> Tuple[Dict[str, Route], List[str]]:
        """The cached routes of ``advertisers``, and the ones to ask for."""
        out: Dict[str, Route] = {}
        missing: List[str] = []
        for advertiser in advertisers:
            cached = None if refresh else self.cached(advertiser, now)
            if cached is None:
                missing.append(advertiser)
            else:
                out[advertiser] = cached
        return out, missing

    @staticmethod
    def no_list(advertisers: Sequence[str], out: Dict[str, Route]) -> Dict[str, Route]:
        for advertiser in advertisers:
            out.setdefault(advertiser, Route(advertiser, 0, [], 0.0, []))
        return out

    @staticmethod
    def result(advertisers: List[str], answers: Dict[str, Optional[bool]], routes: Dict[str, Route]) -> MatchAdvertisersResult:
        """The answers, in the order asked (repeats included)."""
        bits = bytearray((len(advertisers) + 7) // 8)
        wrong = bytearray((len(advertisers) + 7) // 8)
        versions = []
        for i, advertiser in enumerate(advertisers):
            answer = answers.get(advertiser)
            if answer is WRONG_TYPE:
                wrong[i >> 3] |= 1 << (i & 7)
            elif answer:
                bits[i >> 3] |= 1 << (i & 7)
            versions.append(routes[advertiser].version if answer is not None else 0)
        return MatchAdvertisersResult(advertisers, bytes(bits), versions, bytes(wrong) if any(wrong) else b"")

    @staticmethod
    def placement_many(advertisers: Sequence[str]) -> bytes:
        return tier_pb2.PlacementRequest(advertiser_ids=list(advertisers)).SerializeToString()

    def plan(self, pending: Sequence[str], routes: Dict[str, Route], tried: Dict[str, set], now: float,
             answers: Dict[str, Optional[bool]]) -> Tuple[Dict[str, List[str]], List[str]]:
        """The next round of a MatchAdvertisers across the tier: each pending
        advertiser's next untried holder (groups by server), and those with
        none left. Advertisers with no list are answered None here."""
        groups: Dict[str, List[str]] = {}
        exhausted: List[str] = []
        for advertiser in pending:
            route = routes[advertiser]
            if route.version == 0:
                answers[advertiser] = None
                continue
            asked = tried.setdefault(advertiser, set())
            following = next((a for a in self.ordered(route, now) if a not in asked), None)
            if following is None:
                exhausted.append(advertiser)
            else:
                groups.setdefault(following, []).append(advertiser)
        return groups, exhausted

    def settle(self, address: str, members: List[str], result: "Union[MatchAdvertisersResult, RosterError]",
               routes: Dict[str, Route], tried: Dict[str, set], answers: Dict[str, Optional[bool]], now: float) -> Optional[RosterError]:
        """Takes one group's answer: each advertiser answered, or sent on to
        its next holder. Returns the error to report if none answers."""
        if isinstance(result, RosterError):
            if result.code not in TRY_NEXT:
                raise result
            if result.code != StatusCode.NOT_FOUND:
                self.failed(address, now)
            for advertiser in members:
                tried[advertiser].add(address)
            return result
        last: Optional[RosterError] = None
        for i, advertiser in enumerate(members):
            version = result.versions[i]
            if version == 0 or version < routes[advertiser].version:
                tried[advertiser].add(address)  # it no longer holds the list (or an older one)
                last = UnavailableError(f"{address} does not serve version {routes[advertiser].version} of {advertiser}")
                continue
            if version > routes[advertiser].version:
                self.routes.pop(advertiser, None)
            answers[advertiser] = WRONG_TYPE if result.is_wrong_type(i) else result[i]
        return last

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


class _TierOptions:
    """What both tier clients are configured with: the coordinators, each
    match server's client (made on first use), and the routing state."""

    client_type: type = Client

    def __init__(self, coordinators: Union[str, Sequence[str]], *, token: Optional[str] = None,
                 ssl_context: Optional[_ssl.SSLContext] = None, server_hostname: Optional[str] = None,
                 timeout: float = 5.0, connect_timeout: float = 2.0, placement_lifetime: float = 30.0,
                 suspicion: float = 5.0) -> None:
        self.timeout = timeout
        self._options = dict(token=token, ssl_context=ssl_context, server_hostname=server_hostname,
                             connect_timeout=connect_timeout, max_attempts=1)
        self._coordinators = [self.client_type(a, **self._options) for a in _addresses(coordinators)]
        self._servers: Dict[str, "Client | AsyncClient"] = {}
        self._router = _Router(placement_lifetime, suspicion)

    @property
    def placement_calls(self) -> int:
        return self._router.placement_calls

    def _server(self, address: str):  # type: ignore[no-untyped-def]
        client = self._servers.get(address)
        if client is None:
            client = self._servers[address] = self.client_type(address, **self._options)
        return client


class TierClient(_TierOptions):
    """A synchronous client of a tier. ``coordinators``: ``"a:7400,b:7400"``
    (the leader among them answers placement); ``token``: the application's
    client token, used for both the coordinator and the match servers."""

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
                   hash_type: Optional[str] = None, timeout: Optional[float] = None) -> MatchManyResult:
        packed, hash_type = wire.pack_hashes(hashes, hash_type)
        return self._call(advertiser, timeout, lambda c, t: c.match_many(advertiser, packed, hash_type=hash_type, timeout=t),
                          lambda r: r.version)

    def routes(self, advertisers: Sequence[str], *, refresh: bool = False, timeout: Optional[float] = None) -> Dict[str, Route]:
        """The routes of many advertisers: cached ones, the rest asked of the
        coordinator up to 1,000 at a time (version 0: no list)."""
        out, missing = self._router.split_cached(advertisers, refresh, time.monotonic())
        seconds = self.timeout if timeout is None else timeout
        for start in range(0, len(missing), 1_000):
            chunk = missing[start:start + 1_000]
            last: Optional[RosterError] = None
            for coordinator in self._coordinators:
                try:
                    answer = coordinator.call(wire.TIER_PLACEMENT, _Router.placement_many(chunk), timeout=seconds)
                    out.update(self._router.learn_many(answer, time.monotonic()))
                    break
                except (UnavailableError, DeadlineExceededError) as error:
                    last = error
            else:
                assert last is not None
                raise last
        return self._router.no_list(advertisers, out)

    def match_advertisers(self, hash: HashLike, advertisers: Sequence[str], *, other_hash: Optional[HashLike] = None,
                          timeout: Optional[float] = None) -> MatchAdvertisersResult:
        """One hash against many advertisers across the tier: grouped by the
        server each is placed on, one ``MatchAdvertisers`` per group, and an
        advertiser whose server fails or lacks its list asked of its next
        holder, within the one deadline. The groups are asked one after the
        other here; ``AsyncTierClient`` asks them in parallel."""
        key = wire.as_hash(hash)
        other = wire.as_hash(other_hash) if other_hash is not None else None
        advertisers = list(advertisers)
        seconds = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        distinct = list(dict.fromkeys(advertisers))
        routes = self.routes(distinct, timeout=seconds)
        answers: Dict[str, Optional[bool]] = {}
        tried: Dict[str, set] = {}
        refreshed = False
        last: Optional[RosterError] = None
        pending = distinct
        while pending:
            groups, exhausted = self._router.plan(pending, routes, tried, time.monotonic(), answers)
            if not groups:
                if not exhausted:
                    break
                if refreshed or time.monotonic() >= deadline:
                    raise last or UnavailableError(f"no server holds the lists of {', '.join(exhausted[:5])}")
                refreshed = True
                routes.update(self.routes(exhausted, refresh=True, timeout=max(0.001, deadline - time.monotonic())))
                for advertiser in exhausted:
                    tried[advertiser] = set()
                pending = exhausted
                continue
            for address, members in groups.items():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceededError(f"no server answered for {len(pending)} advertisers within {seconds:g} s")
                try:
                    result: Union[MatchAdvertisersResult, RosterError] = self._server(address).match_advertisers(
                        key, members, other_hash=other, timeout=remaining / max(1, len(groups)))
                except RosterError as error:
                    result = error
                last = self._router.settle(address, members, result, routes, tried, answers, time.monotonic()) or last
            pending = [a for a in pending if a not in answers]
        return self._router.result(advertisers, answers, routes)


class AsyncTierClient(_TierOptions):
    """The asyncio form of :class:`TierClient`, with the same options."""

    client_type = AsyncClient

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
                         hash_type: Optional[str] = None, timeout: Optional[float] = None) -> MatchManyResult:
        packed, hash_type = wire.pack_hashes(hashes, hash_type)
        return await self._call(advertiser, timeout, lambda c, t: c.match_many(advertiser, packed, hash_type=hash_type, timeout=t),
                                lambda r: r.version)

    async def routes(self, advertisers: Sequence[str], *, refresh: bool = False,
                     timeout: Optional[float] = None) -> Dict[str, Route]:
        """As :meth:`TierClient.routes`."""
        loop = asyncio.get_running_loop()
        out, missing = self._router.split_cached(advertisers, refresh, loop.time())
        seconds = self.timeout if timeout is None else timeout
        for start in range(0, len(missing), 1_000):
            chunk = missing[start:start + 1_000]
            last: Optional[RosterError] = None
            for coordinator in self._coordinators:
                try:
                    answer = await coordinator.call(wire.TIER_PLACEMENT, _Router.placement_many(chunk), timeout=seconds)
                    out.update(self._router.learn_many(answer, loop.time()))
                    break
                except (UnavailableError, DeadlineExceededError) as error:
                    last = error
            else:
                assert last is not None
                raise last
        return self._router.no_list(advertisers, out)

    async def match_advertisers(self, hash: HashLike, advertisers: Sequence[str], *, other_hash: Optional[HashLike] = None,
                                timeout: Optional[float] = None) -> MatchAdvertisersResult:
        """As :meth:`TierClient.match_advertisers`, the groups asked in parallel."""
        loop = asyncio.get_running_loop()
        key = wire.as_hash(hash)
        other = wire.as_hash(other_hash) if other_hash is not None else None
        advertisers = list(advertisers)
        seconds = self.timeout if timeout is None else timeout
        deadline = loop.time() + seconds
        distinct = list(dict.fromkeys(advertisers))
        routes = await self.routes(distinct, timeout=seconds)
        answers: Dict[str, Optional[bool]] = {}
        tried: Dict[str, set] = {}
        refreshed = False
        last: Optional[RosterError] = None
        pending = distinct
        while pending:
            groups, exhausted = self._router.plan(pending, routes, tried, loop.time(), answers)
            if not groups:
                if not exhausted:
                    break
                if refreshed or loop.time() >= deadline:
                    raise last or UnavailableError(f"no server holds the lists of {', '.join(exhausted[:5])}")
                refreshed = True
                routes.update(await self.routes(exhausted, refresh=True, timeout=max(0.001, deadline - loop.time())))
                for advertiser in exhausted:
                    tried[advertiser] = set()
                pending = exhausted
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineExceededError(f"no server answered for {len(pending)} advertisers within {seconds:g} s")

            async def ask(address: str, members: List[str]):
                try:
                    return await self._server(address).match_advertisers(key, members, other_hash=other, timeout=remaining)
                except RosterError as error:
                    return error
            results = await asyncio.gather(*(ask(a, m) for a, m in groups.items()))
            for (address, members), result in zip(groups.items(), results):
                last = self._router.settle(address, members, result, routes, tried, answers, loop.time()) or last
            pending = [a for a in pending if a not in answers]
        return self._router.result(advertisers, answers, routes)
