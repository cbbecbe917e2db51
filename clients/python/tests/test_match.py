"""Every method of the match API against a real `roster dev`."""

from __future__ import annotations

import asyncio
import os

import pytest

from conftest import MEMBERS, md5
from roster_client import (
    AsyncClient,
    Client,
    InvalidArgumentError,
    MatchManyResult,
    NotFoundError,
    RosterError,
    StatusCode,
    UnauthenticatedError,
    UnimplementedError,
)
from roster_client import _protocol as wire

STRANGERS = [f"stranger{i}@example.com" for i in range(500)]


def test_match_answers_members_and_strangers(dev):
    with Client(dev.address) as roster:
        hit = roster.match("acme", md5(MEMBERS[7]))
        assert hit.matched and bool(hit) and hit.version >= 1
        assert roster.match("acme", md5(MEMBERS[7]).hex()).matched, "32 hex digits work as well as 16 bytes"
        miss = roster.match("acme", md5("stranger@example.com"))
        assert not miss.matched and miss.version == hit.version


def test_match_many_bitmap_and_booleans(dev):
    hashes = [md5(e) for e in MEMBERS[:300]] + [md5(e) for e in STRANGERS[:300]]
    with Client(dev.address) as roster:
        result = roster.match_many("acme", hashes)
        assert isinstance(result, MatchManyResult)
        assert result.count == len(result) == 600
        assert result.matched_count == 300
        assert result.to_list() == [True] * 300 + [False] * 300
        assert result[0] and not result[-1]
        assert len(result.bitmap) == 75
        packed = roster.match_many("acme", b"".join(hashes))
        assert packed.bitmap == result.bitmap
        assert roster.match_many("acme", []).count == 0


def test_match_each_pipelines_one_call_per_hash(dev):
    hashes = [md5(e) for e in MEMBERS[:700]] + [md5(e) for e in STRANGERS]
    with Client(dev.address) as roster:
        answers = roster.match_each("acme", hashes, window=64)
    assert answers == [True] * 700 + [False] * 500


def test_membership_streams_any_number_in_batches(dev):
    emails = MEMBERS[:1_500] + STRANGERS
    with Client(dev.address) as roster:
        answers = list(roster.membership("acme", (md5(e) for e in emails), batch_size=128))
    assert answers == [True] * 1_500 + [False] * 500


def test_match_advertisers_answers_each_in_order(dev):
    with Client(dev.address) as roster:
        result = roster.match_advertisers(md5(MEMBERS[5]), ["acme", "ghost", "acme"])
        assert list(result) == [True, None, True]
        assert result.as_dict() == {"acme": True, "ghost": None}
        assert result.members == ["acme", "acme"] and result.unknown == ["ghost"]
        assert result.versions[0] >= 1 and result.versions[1] == 0
        assert list(roster.match_advertisers(md5(STRANGERS[0]), ["acme"])) == [False]
        with pytest.raises(InvalidArgumentError, match="exceed the limit"):
            roster.match_advertisers(md5(MEMBERS[5]), ["acme"] * 10_001)

    async def run():
        async with AsyncClient(dev.address) as roster:
            result = await roster.match_advertisers(md5(MEMBERS[5]).hex(), ["ghost", "acme"])
            assert list(result) == [None, True]
    asyncio.run(run())


def test_errors_carry_their_status(dev):
    with Client(dev.address) as roster:
        with pytest.raises(NotFoundError) as missing:
            roster.match("ghost", md5("a@example.com"))
        assert missing.value.code == StatusCode.NOT_FOUND
        assert "ghost" in missing.value.message
        with pytest.raises(InvalidArgumentError, match="hash must be 16 bytes"):
            roster.call(wire.MATCH, wire.match_request(b"acme", b"x" * 15))
        with pytest.raises(InvalidArgumentError, match="multiple of 16|16 bytes each"):
            roster.call(wire.MATCH_MANY, wire.encode_string_bytes(1, b"acme") + wire.encode_string_bytes(2, b"y" * 20))
        with pytest.raises(UnimplementedError):
            roster.call(0x0001_0063, b"")
        with pytest.raises(ValueError, match="16 bytes"):
            roster.match("acme", b"short")
        # The connection survives every one of these.
        assert roster.match("acme", md5(MEMBERS[0])).matched
        assert roster.ping() > 0


def test_tokens(dev_with_tokens):
    with Client(dev_with_tokens.address) as anonymous:
        with pytest.raises(UnauthenticatedError):
            anonymous.match("acme", md5(MEMBERS[0]))
    with Client(dev_with_tokens.address, token="wrong") as wrong:
        with pytest.raises(UnauthenticatedError) as refused:
            wrong.match("acme", md5(MEMBERS[0]))
        assert isinstance(refused.value, RosterError) and refused.value.code == 16
    with Client(dev_with_tokens.address, token="c1") as good:
        assert good.match("acme", md5(MEMBERS[0])).matched


def test_async_client_many_calls_on_one_connection(dev):
    async def run():
        async with AsyncClient(dev.address) as roster:
            emails = MEMBERS[:400] + STRANGERS[:400]
            answers = await asyncio.gather(*(roster.match("acme", md5(e)) for e in emails))
            assert [a.matched for a in answers] == [True] * 400 + [False] * 400
            many = await roster.match_many("acme", [md5(e) for e in emails])
            assert many.to_list() == [a.matched for a in answers]
            streamed = [a async for a in roster.membership("acme", (md5(e) for e in emails), batch_size=50, in_flight=3)]
            assert streamed == many.to_list()
            with pytest.raises(NotFoundError):
                await roster.match("ghost", md5("x@example.com"))
            assert await roster.ping() > 0
    asyncio.run(run())


def test_async_tokens(dev_with_tokens):
    async def run():
        async with AsyncClient(dev_with_tokens.address) as anonymous:
            with pytest.raises(UnauthenticatedError):
                await anonymous.match("acme", md5(MEMBERS[0]))
        async with AsyncClient(dev_with_tokens.address, token="c1") as good:
            assert (await good.match("acme", md5(MEMBERS[0]))).matched
    asyncio.run(run())


def test_a_refused_connection_is_a_typed_error():
    import socket
    from roster_client import ConnectionFailedError, UnavailableError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"127.0.0.1:{port}", timeout=1) as nobody:
        with pytest.raises(ConnectionFailedError) as refused:
            nobody.match("acme", os.urandom(16))
        assert isinstance(refused.value, UnavailableError) and refused.value.code == StatusCode.UNAVAILABLE
