from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdvertiserPlacement(_message.Message):
    __slots__ = ["advertiser_id", "nodes", "version"]
    ADVERTISER_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    advertiser_id: str
    nodes: _containers.RepeatedScalarFieldContainer[int]
    version: int
    def __init__(self, advertiser_id: _Optional[str] = ..., version: _Optional[int] = ..., nodes: _Optional[_Iterable[int]] = ...) -> None: ...

class PlacementRequest(_message.Message):
    __slots__ = ["advertiser_ids"]
    ADVERTISER_IDS_FIELD_NUMBER: _ClassVar[int]
    advertiser_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, advertiser_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PlacementResponse(_message.Message):
    __slots__ = ["advertisers", "nodes", "replicas"]
    ADVERTISERS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    advertisers: _containers.RepeatedCompositeFieldContainer[AdvertiserPlacement]
    nodes: _containers.RepeatedCompositeFieldContainer[TierNode]
    replicas: int
    def __init__(self, nodes: _Optional[_Iterable[_Union[TierNode, _Mapping]]] = ..., advertisers: _Optional[_Iterable[_Union[AdvertiserPlacement, _Mapping]]] = ..., replicas: _Optional[int] = ...) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ["address", "advertisers_served", "bytes_served", "incarnation", "leaving", "node_id", "weight"]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ADVERTISERS_SERVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_SERVED_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    address: str
    advertisers_served: int
    bytes_served: int
    incarnation: str
    leaving: bool
    node_id: str
    weight: float
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., weight: _Optional[float] = ..., incarnation: _Optional[str] = ..., bytes_served: _Optional[int] = ..., advertisers_served: _Optional[int] = ..., leaving: bool = ...) -> None: ...

class RegisterNodeResponse(_message.Message):
    __slots__ = ["heartbeat_interval_ms"]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    def __init__(self, heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class TierNode(_message.Message):
    __slots__ = ["address", "advertisers", "bytes_served", "healthy", "last_seen_ms_ago", "node_id", "weight"]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ADVERTISERS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SERVED_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_AGO_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    address: str
    advertisers: int
    bytes_served: int
    healthy: bool
    last_seen_ms_ago: int
    node_id: str
    weight: float
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., weight: _Optional[float] = ..., healthy: bool = ..., advertisers: _Optional[int] = ..., bytes_served: _Optional[int] = ..., last_seen_ms_ago: _Optional[int] = ...) -> None: ...
