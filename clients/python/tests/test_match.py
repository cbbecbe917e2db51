"""Every method of the match API against a real `roster dev`."""

from __future__ import annotations

import asyncio
import os

import pytest

from conftest import MEMBERS, eventually, md5, sha256, write_list
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


def test_sha256_lists_are_asked_with_their_own_width(dev):
    """A list of SHA-256s beside acme's MD5s: every method takes 32-byte
    hashes, a hash of the other width is refused naming the list's type,
    and MatchAdvertisers with both of an email's hashes asks each list
    with its own."""
    members = MEMBERS[:300]
    write_list(dev.root, "shop", members, hash=sha256)
    with Client(dev.address, timeout=2) as roster:
        eventually("shop to go live", lambda: roster.match("shop", sha256(members[0])).matched)
        assert roster.match("shop", sha256(members[5]).hex()).matched
        assert not roster.match("shop", sha256(STRANGERS[0])).matched
        with pytest.raises(InvalidArgumentError, match="holds SHA-256 hashes"):
            roster.match("shop", md5(members[5]))

        asked = [sha256(e) for e in members[:40] + STRANGERS[:10]]
        many = roster.match_many("shop", asked)
        assert list(many) == [True] * 40 + [False] * 10
        assert roster.match_many("shop", b"".join(asked), hash_type="sha256").matched_count == 40
        with pytest.raises(InvalidArgumentError, match="not MD5"):
            roster.match_many("shop", b"".join(asked), hash_type="md5")
        with pytest.raises(ValueError, match="one type"):
            roster.match_many("shop", [sha256(members[0]), md5(members[0])])
        assert roster.match_each("shop", asked[:3] + asked[-2:]) == [True, True, True, False, False]
        assert list(roster.membership("shop", asked, batch_size=7)) == [True] * 40 + [False] * 10

        one = roster.match_advertisers(md5(members[1]), ["acme", "shop", "nobody"])
        assert list(one) == [True, None, None]
        assert one.wrong_type == ["shop"] and one.unknown == ["nobody"]
        both = roster.match_advertisers(md5(members[1]), ["acme", "shop", "nobody"], other_hash=sha256(members[1]))
        assert list(both) == [True, True, None] and both.wrong_type == []
        with pytest.raises(InvalidArgumentError, match="other type"):
            roster.match_advertisers(md5(members[1]), ["acme"], other_hash=md5(members[2]))

    async def main() -> None:
        async with AsyncClient(dev.address) as roster:
            assert (await roster.match("shop", sha256(members[9]))).matched
            assert list(await roster.match_many("shop", [sha256(members[9]), sha256(STRANGERS[1])])) == [True, False]
            both = await roster.match_advertisers(sha256(members[2]), ["shop", "acme"], other_hash=md5(members[2]))
            assert list(both) == [True, True]

    asyncio.run(main())
