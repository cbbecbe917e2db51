from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class MatchAdvertisersRequest(_message.Message):
    __slots__ = ["advertiser_ids", "hash"]
    ADVERTISER_IDS_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    advertiser_ids: _containers.RepeatedScalarFieldContainer[str]
    hash: bytes
    def __init__(self, hash: _Optional[bytes] = ..., advertiser_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class MatchAdvertisersResponse(_message.Message):
    __slots__ = ["matched", "unknown_count", "versions"]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    matched: bytes
    unknown_count: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, matched: _Optional[bytes] = ..., versions: _Optional[_Iterable[int]] = ..., unknown_count: _Optional[int] = ...) -> None: ...

class MatchManyRequest(_message.Message):
    __slots__ = ["advertiser_id", "hashes"]
    ADVERTISER_ID_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    advertiser_id: str
    hashes: bytes
    def __init__(self, advertiser_id: _Optional[str] = ..., hashes: _Optional[bytes] = ...) -> None: ...

class MatchManyResponse(_message.Message):
    __slots__ = ["count", "matched", "matched_count", "version"]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_COUNT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    count: int
    matched: bytes
    matched_count: int
    version: int
    def __init__(self, matched: _Optional[bytes] = ..., count: _Optional[int] = ..., matched_count: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class MatchRequest(_message.Message):
    __slots__ = ["advertiser_id", "hash"]
    ADVERTISER_ID_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    advertiser_id: str
    hash: bytes
    def __init__(self, advertiser_id: _Optional[str] = ..., hash: _Optional[bytes] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ["matched", "version"]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    matched: bool
    version: int
    def __init__(self, matched: bool = ..., version: _Optional[int] = ...) -> None: ...
