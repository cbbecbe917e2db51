"""A tier as users run it, in separate processes on loopback: a coordinator
with --replicas 2, three match servers that join it, a worker. The tier
clients find the list through the placement and keep answering, with no
wrong answer and no failed call, while a holder drains (SIGTERM) and while
one is killed (SIGKILL) mid-load."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Dict, List

import pytest

from conftest import MEMBERS, RosterProcess, eventually, md5, sha256, write_list
from roster_client import AsyncTierClient, NotFoundError, TierClient

STRANGERS = [f"stranger{i}@example.com" for i in range(1_000)]


@pytest.fixture
def tier(tmp_path):
    data = str(tmp_path)
    processes: List[RosterProcess] = []
    coordinator = RosterProcess(["coordinator", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0",
                                 "--block-size", "2048", "--scan-interval", "0.2", "--replicas", "2",
                                 "--node-heartbeat", "0.2", "--log-level", "error"])
    processes.append(coordinator)
    address = coordinator.wait_for_line("coordinator listening on").split(";")[0].split()[-1]
    nodes: Dict[str, RosterProcess] = {}
    for node_id in ["n1", "n2", "n3"]:
        node = RosterProcess(["match-server", "--no-auth", "--plaintext", "--data", data, "--listen", "127.0.0.1:0",
                              "--node-id", node_id, "--coordinator", address, "--log-level", "error"])
        processes.append(node)
        listening = node.wait_for_line("match server listening on").split(";")[0].split()[-1]
        nodes[listening] = node
    processes.append(RosterProcess(["worker", "--data", data, "--coordinator", address, "--log-level", "error"]))
    write_list(tmp_path, "acme", MEMBERS)
    write_list(tmp_path, "shop", MEMBERS[:500], hash=sha256)
    yield address, nodes
    for process in reversed(processes):
        process.stop(signal.SIGKILL)


async def load(client: AsyncTierClient, seconds: float) -> Dict[str, int]:
    """Matches half members, half strangers, 100 at a time, checking each."""
    counts = {"calls": 0, "wrong": 0}
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        emails = MEMBERS[i % 1_900:i % 1_900 + 50] + STRANGERS[i % 950:i % 950 + 50]
        i += 37
        answers = await asyncio.gather(*(client.match("acme", md5(e), timeout=3) for e in emails))
        counts["calls"] += len(answers)
        counts["wrong"] += sum(a.matched != (e in MEMBERS_SET) for a, e in zip(answers, emails))
    return counts


MEMBERS_SET = set(MEMBERS)


def test_a_tier_serves_through_a_drain_and_a_death(tier):
    address, nodes = tier
    with TierClient(address, timeout=3) as sync_client:
        eventually("the list to be served by the tier",
                   lambda: sync_client.match("acme", md5(MEMBERS[1_999])).matched, timeout=90)
        assert not sync_client.match("acme", md5("nobody@example.com")).matched
        many = sync_client.match_many("acme", [md5(e) for e in MEMBERS[:10] + STRANGERS[:10]])
        assert many.to_list() == [True] * 10 + [False] * 10
        with pytest.raises(NotFoundError):
            sync_client.match("ghost", md5("a@example.com"))
        across = sync_client.match_advertisers(md5(MEMBERS[3]), ["acme", "ghost", "acme"])
        assert list(across) == [True, None, True]
        assert list(sync_client.match_advertisers(md5("nobody@example.com"), ["acme"])) == [False]
        # A list of SHA-256s beside acme's MD5s: asked with each list's own type.
        eventually("shop to be served by the tier", lambda: sync_client.match("shop", sha256(MEMBERS[0])).matched, timeout=90)
        both = sync_client.match_advertisers(md5(MEMBERS[3]), ["acme", "shop", "ghost"], other_hash=sha256(MEMBERS[3]))
        assert list(both) == [True, True, None] and both.wrong_type == []
        md5_only = sync_client.match_advertisers(md5(MEMBERS[3]), ["shop", "acme"])
        assert list(md5_only) == [None, True] and md5_only.wrong_type == ["shop"] and md5_only.unknown == []
        calls_before = sync_client.placement_calls
        for e in MEMBERS[:20]:
            assert sync_client.match("acme", md5(e)).matched
        assert sync_client.placement_calls == calls_before, "the placement is cached"

    async def run():
        async with AsyncTierClient(address, timeout=3, suspicion=2) as client:
            holders = (await client.route("acme")).addresses
            assert len(holders) == 2

            # A holder drains mid-load: its refusals go to the other holder.
            running = asyncio.ensure_future(load(client, 2.5))
            await asyncio.sleep(0.5)
            nodes[holders[0]].process.send_signal(signal.SIGTERM)
            drained = await running
            assert drained["wrong"] == 0 and drained["calls"] > 500, drained

            # The coordinator places the list on the third node.
            seen = []

            async def two_live_holders() -> bool:
                route = await client.route("acme", refresh=True)
                seen.append(route)
                return len(route.healthy) == 2 and holders[0] not in route.healthy
            for _ in range(600):
                if await two_live_holders():
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the list was not placed on two live nodes again: {seen[-3:]}, drained {holders[0]}")
            holders = (await client.route("acme")).healthy

            # A holder is killed mid-load: refused connections fail over at once.
            running = asyncio.ensure_future(load(client, 2.5))
            await asyncio.sleep(0.5)
            nodes[holders[0]].process.send_signal(signal.SIGKILL)
            # At once, a new client (whose placement still lists the dead
            # holder first): one hash across advertisers fails over too.
            fresh = AsyncTierClient(address, timeout=3)
            try:
                assert (await fresh.route("acme")).addresses[0] == holders[0]
                across = await fresh.match_advertisers(md5(MEMBERS[9]), ["ghost", "acme"])
                assert list(across) == [None, True]
                assert list(await fresh.match_advertisers(md5("nobody@example.com"), ["acme"])) == [False]
            finally:
                await fresh.close()
            killed = await running
            assert killed["wrong"] == 0 and killed["calls"] > 500, killed

    asyncio.run(run())
