from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
HASH_TYPE_MD5: HashType
HASH_TYPE_SHA256: HashType
HASH_TYPE_UNSPECIFIED: HashType

class MatchAdvertisersRequest(_message.Message):
    __slots__ = ["advertiser_ids", "hash", "other_hash"]
    ADVERTISER_IDS_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    OTHER_HASH_FIELD_NUMBER: _ClassVar[int]
    advertiser_ids: _containers.RepeatedScalarFieldContainer[str]
    hash: bytes
    other_hash: bytes
    def __init__(self, hash: _Optional[bytes] = ..., advertiser_ids: _Optional[_Iterable[str]] = ..., other_hash: _Optional[bytes] = ...) -> None: ...

class MatchAdvertisersResponse(_message.Message):
    __slots__ = ["matched", "unknown_count", "versions", "wrong_type", "wrong_type_count"]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_COUNT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    WRONG_TYPE_COUNT_FIELD_NUMBER: _ClassVar[int]
    WRONG_TYPE_FIELD_NUMBER: _ClassVar[int]
    matched: bytes
    unknown_count: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    wrong_type: bytes
    wrong_type_count: int
    def __init__(self, matched: _Optional[bytes] = ..., versions: _Optional[_Iterable[int]] = ..., unknown_count: _Optional[int] = ..., wrong_type: _Optional[bytes] = ..., wrong_type_count: _Optional[int] = ...) -> None: ...

class MatchManyRequest(_message.Message):
    __slots__ = ["advertiser_id", "hash_type", "hashes"]
    ADVERTISER_ID_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    HASH_TYPE_FIELD_NUMBER: _ClassVar[int]
    advertiser_id: str
    hash_type: HashType
    hashes: bytes
    def __init__(self, advertiser_id: _Optional[str] = ..., hashes: _Optional[bytes] = ..., hash_type: _Optional[_Union[HashType, str]] = ...) -> None: ...

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

class HashType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
