"""The Roster wire protocol (docs/PROTOCOL.md), without any I/O.

:class:`Protocol` turns calls into bytes to send and received bytes into
events; the synchronous and the asyncio clients own the sockets and the
waiting, and share everything about the protocol through it (as h11 does for
HTTP/1.1). Nothing here blocks or reads a clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from .errors import ProtocolError, StatusCode, error_for

MAGIC = b"ROST"
VERSION = 1
PREFACE = MAGIC + struct.pack(">HH", VERSION, 0)
HEADER = struct.Struct(">IBBI")
HEADER_LENGTH = HEADER.size  # 10
REQUEST_HEAD = struct.Struct(">IIH")

REQUEST, RESPONSE, CANCEL, PING, GOAWAY = 1, 2, 3, 4, 5
FLAG_ACK = 0x01
FLAG_NOT_PROCESSED = 0x02
DEFAULT_MAX_FRAME = 4 * 1024 * 1024

# Method ids: service id << 16 | method number (schema/*.rdl).
MATCH = 0x0001_0001
MATCH_MANY = 0x0001_0002
MATCH_ADVERTISERS = 0x0001_0003
TIER_PLACEMENT = 0x0006_0002

Metadata = Sequence[Tuple[str, str]]


def encode_metadata(metadata: Metadata) -> bytes:
    """The metadata part of a REQUEST payload: a count, then each pair."""
    out = bytearray(struct.pack(">H", len(metadata)))
    for key, value in metadata:
        k, v = key.encode(), value.encode()
        if len(k) > 0xFFFF or len(v) > 0xFFFF:
            raise ValueError(f"metadata entry {key!r} is longer than 65,535 bytes")
        out += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    return bytes(out)


def request_frame(call_id: int, method: int, timeout_ms: int, metadata: bytes, message: bytes) -> bytes:
    """A whole REQUEST frame. ``metadata`` is :func:`encode_metadata`'s bytes."""
    length = 8 + len(metadata) + len(message)
    return HEADER.pack(length, REQUEST, 0, call_id) + struct.pack(">II", method, timeout_ms) + metadata + message


def cancel_frame(call_id: int) -> bytes:
    return HEADER.pack(0, CANCEL, 0, call_id)


def ping_frame(opaque: bytes, ack: bool = False) -> bytes:
    if len(opaque) != 8:
        raise ValueError("a PING carries exactly 8 bytes")
    return HEADER.pack(8, PING, FLAG_ACK if ack else 0, 0) + opaque


def goaway_frame(code: int, last_call_id: int, message: str) -> bytes:
    text = message.encode()
    return HEADER.pack(5 + len(text), GOAWAY, 0, 0) + struct.pack(">BI", code, last_call_id) + text


# MARK: events


@dataclass
class Response:
    """A RESPONSE: ``status`` 0 and the message, or a status and its text."""

    call_id: int
    status: int
    not_processed: bool
    body: bytes

    def result(self) -> bytes:
        """The response message's bytes; raises the call's error otherwise."""
        if self.status != StatusCode.OK:
            raise error_for(self.status, self.body.decode("utf-8", "replace"))
        return self.body


@dataclass
class Ping:
    """A PING from the server to answer (``ack`` False) or an answer to ours."""

    opaque: bytes
    ack: bool


@dataclass
class GoAway:
    """The server is leaving: drain (code 0) or a connection error."""

    code: int
    last_call_id: int
    message: str


@dataclass
class PrefaceReceived:
    version: int


Event = Union[Response, Ping, GoAway, PrefaceReceived]


class Protocol:
    """One connection's protocol state: call ids, the bytes not yet whole.

    ``feed(data)`` returns the events the bytes complete; the ``*_bytes``
    methods return what to send. Not thread-safe: one owner per connection.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._saw_preface = False
        self._next_id = 1
        #: The server sent GOAWAY: new calls go to another connection.
        self.draining = False
        #: The highest call id the server says it saw before its GOAWAY.
        self.last_call_id: Optional[int] = None

    def next_call_id(self) -> int:
        call_id = self._next_id
        self._next_id = 1 if self._next_id >= 0xFFFF_FFFF else self._next_id + 1
        return call_id

    def request(self, method: int, message: bytes, metadata: bytes, timeout_ms: int = 0) -> Tuple[int, bytes]:
        """A new call's id and its REQUEST frame."""
        call_id = self.next_call_id()
        return call_id, request_frame(call_id, method, timeout_ms, metadata, message)

    def feed(self, data: bytes) -> List[Event]:
        """The events ``data`` completes, in order. Raises ProtocolError on a
        peer that breaks the protocol (the connection must then close)."""
        buffer = self._buffer
        buffer += data
        events: List[Event] = []
        offset = 0
        if not self._saw_preface:
            if len(buffer) < 8:
                if buffer and buffer[0:1] != MAGIC[0:1]:
                    raise ProtocolError(self._not_roster(bytes(buffer)))
                return events
            if bytes(buffer[0:4]) != MAGIC:
                raise ProtocolError(self._not_roster(bytes(buffer[:8])))
            version = struct.unpack_from(">H", buffer, 4)[0]
            self._saw_preface = True
            events.append(PrefaceReceived(version))
            offset = 8
        end = len(buffer)
        while end - offset >= HEADER_LENGTH:
            length, kind, flags, call_id = HEADER.unpack_from(buffer, offset)
            if length > self.max_frame_size:
                raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self.max_frame_size}")
            if end - offset < HEADER_LENGTH + length:
                break
            start = offset + HEADER_LENGTH
            offset = start + length
            if kind == RESPONSE:
                if length < 1:
                    raise ProtocolError("a RESPONSE without a status")
                events.append(Response(call_id, buffer[start], bool(flags & FLAG_NOT_PROCESSED), bytes(buffer[start + 1:offset])))
            elif kind == PING:
                if length != 8:
                    raise ProtocolError(f"PING payload must be exactly 8 bytes, not {length}")
                events.append(Ping(bytes(buffer[start:offset]), bool(flags & FLAG_ACK)))
            elif kind == GOAWAY:
                if length < 5:
                    raise ProtocolError("malformed GOAWAY")
                code, last = struct.unpack_from(">BI", buffer, start)
                self.draining = True
                self.last_call_id = last
                events.append(GoAway(code, last, bytes(buffer[start + 5:offset]).decode("utf-8", "replace")))
            else:
                raise ProtocolError(f"unexpected frame type 0x{kind:x} from a server")
        del buffer[:offset]
        return events

    @staticmethod
    def _not_roster(first: bytes) -> str:
        if first[:1] in (b"\x14", b"\x15", b"\x16", b"\x17"):
            return "the server answered with TLS: connect with TLS (an ssl context)"
        return f"the peer is not a Roster server (it sent {first!r} where the preface belongs)"


# MARK: the match messages, without a protobuf object per call


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, i: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ProtocolError("a response ends inside a varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ProtocolError("a varint longer than 10 bytes")


def encode_string_bytes(field: int, value: bytes) -> bytes:
    """A length-delimited field; proto3 leaves an empty one out."""
    if not value:
        return b""
    return bytes([field << 3 | 2]) + _varint(len(value)) + value


def match_request(advertiser: bytes, key: bytes) -> bytes:
    """``MatchRequest{advertiser_id, hash}`` as protoc's encoders write it."""
    return encode_string_bytes(1, advertiser) + encode_string_bytes(2, key)


def match_advertisers_request(key: bytes, advertisers: Sequence[str], other: bytes = b"") -> bytes:
    """``MatchAdvertisersRequest{hash, advertiser_ids, other_hash}``, by protoc's classes."""
    from ._proto import match_pb2

    return match_pb2.MatchAdvertisersRequest(hash=key, advertiser_ids=list(advertisers), other_hash=other).SerializeToString()


#: ``HashType`` numbers (schema/match.rdl) by name, and widths by name.
HASH_TYPES = {"md5": 1, "sha256": 2}
HASH_WIDTHS = {"md5": 16, "sha256": 32}


def match_many_request(advertiser: bytes, packed: bytes, hash_type: Optional[str]) -> bytes:
    """``MatchManyRequest{advertiser_id, hashes, hash_type}``: the type
    left out when None (the server takes the list's)."""
    message = encode_string_bytes(1, advertiser) + encode_string_bytes(2, packed)
    if hash_type is not None:
        if hash_type not in HASH_TYPES:
            raise ValueError(f"hash_type is 'md5' or 'sha256', not {hash_type!r}")
        message += bytes([3 << 3]) + _varint(HASH_TYPES[hash_type])
    return message


def decode_fields(data: bytes) -> dict:
    """A message's fields by number (varints as ints, length-delimited as
    bytes; the last occurrence wins; fixed-width fields skipped): enough for
    the match responses, whose fields are all varints and bytes."""
    fields: dict = {}
    i, n = 0, len(data)
    while i < n:
        tag, i = _read_varint(data, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            fields[number], i = _read_varint(data, i)
        elif wire == 2:
            length, i = _read_varint(data, i)
            if i + length > n:
                raise ProtocolError("a field runs past the end of its message")
            fields[number] = data[i:i + length]
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ProtocolError(f"unsupported wire type {wire}")
    return fields


def as_hash(value: Union[bytes, bytearray, memoryview, str]) -> bytes:
    """A hash from bytes or hex digits: an MD5 (16 bytes, 32 digits) or a
    SHA-256 (32 bytes, 64 digits)."""
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"not 32 or 64 hex digits: {value!r}") from None
    value = bytes(value)
    if len(value) not in (16, 32):
        raise ValueError(f"a hash is 16 bytes (an MD5) or 32 (a SHA-256), not {len(value)}")
    return value


def hash_type_of(key: bytes) -> str:
    """'md5' or 'sha256', by width."""
    return "sha256" if len(key) == 32 else "md5"


def pack_hashes(hashes: Union[bytes, bytearray, memoryview, Iterable],
                hash_type: Optional[str] = None) -> Tuple[bytes, Optional[str]]:
    """Hashes packed back to back, and their type: bytes as they are (a
    multiple of the type's width; of 16 when no type is said, and the type
    then left to the server, the list's), or any iterable of hashes, all
    of one type."""
    if hash_type is not None and hash_type not in HASH_WIDTHS:
        raise ValueError(f"hash_type is 'md5' or 'sha256', not {hash_type!r}")
    if isinstance(hashes, (bytes, bytearray, memoryview)):
        packed = bytes(hashes)
        width = HASH_WIDTHS[hash_type] if hash_type else 16
        if len(packed) % width:
            raise ValueError(f"packed hashes must be a multiple of {width} bytes, not {len(packed)}")
        return packed, hash_type
    keys = [as_hash(h) for h in hashes]
    types = {hash_type_of(k) for k in keys} | ({hash_type} if hash_type else set())
    if len(types) > 1:
        raise ValueError("the hashes of one call must be of one type (MD5 or SHA-256)")
    return b"".join(keys), (types.pop() if types else hash_type)
