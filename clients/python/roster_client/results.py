"""What the match calls answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

from ._protocol import decode_fields


@dataclass(frozen=True)
class MatchResult:
    """One hash's answer: whether it is a member, and the list version asked."""

    matched: bool
    #: The advertiser's list version that answered.
    version: int

    def __bool__(self) -> bool:
        return self.matched

    @classmethod
    def decode(cls, body: bytes) -> "MatchResult":
        # The common shapes first: no field (a miss from version 0), or
        # `08 01` and/or `10 <varint>`; anything else the general way.
        fields = decode_fields(body)
        return cls(bool(fields.get(1, 0)), fields.get(2, 0))


@dataclass(frozen=True)
class MatchManyResult:
    """A batch's answers: bit i of ``bitmap`` (LSB first) for hash i.

    Indexable and iterable as booleans: ``result[3]``, ``list(result)``.
    """

    bitmap: bytes
    count: int
    matched_count: int
    version: int

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> bool:
        if i < 0:
            i += self.count
        if not 0 <= i < self.count:
            raise IndexError(f"hash {i} of a batch of {self.count}")
        return bool(self.bitmap[i >> 3] >> (i & 7) & 1)

    def __iter__(self) -> Iterator[bool]:
        bitmap = self.bitmap
        for i in range(self.count):
            yield bool(bitmap[i >> 3] >> (i & 7) & 1)

    def to_list(self) -> List[bool]:
        return list(self)

    @classmethod
    def decode(cls, body: bytes) -> "MatchManyResult":
        fields = decode_fields(body)
        return cls(bytes(fields.get(1, b"")), fields.get(2, 0), fields.get(3, 0), fields.get(4, 0))


@dataclass(frozen=True)
class MatchAdvertisersResult:
    """One hash's answer from many advertisers' lists, in the order asked.

    ``result[i]`` is True or False, or None for an advertiser the server
    serves no list of or whose list holds the other hash type than the one
    asked with; ``as_dict()`` maps each advertiser to the same.
    """

    advertisers: Sequence[str]
    bitmap: bytes
    #: The version that answered each advertiser; 0: no list.
    versions: Sequence[int]
    #: One bit per advertiser asked: its list holds a hash type not given.
    wrong_type_bitmap: bytes = b""

    def __len__(self) -> int:
        return len(self.advertisers)

    def __getitem__(self, i: int) -> Optional[bool]:
        if i < 0:
            i += len(self.advertisers)
        if self.versions[i] == 0 or self.is_wrong_type(i):
            return None
        return bool(self.bitmap[i >> 3] >> (i & 7) & 1)

    def is_wrong_type(self, i: int) -> bool:
        """Whether advertiser ``i``'s list holds a hash type not given."""
        return (i >> 3) < len(self.wrong_type_bitmap) and bool(self.wrong_type_bitmap[i >> 3] >> (i & 7) & 1)

    def __iter__(self) -> Iterator[Optional[bool]]:
        for i in range(len(self.advertisers)):
            yield self[i]

    def as_dict(self) -> Dict[str, Optional[bool]]:
        return dict(zip(self.advertisers, self))

    @property
    def members(self) -> List[str]:
        """The advertisers whose lists hold the hash."""
        return [a for a, answer in zip(self.advertisers, self) if answer]

    @property
    def unknown(self) -> List[str]:
        """The advertisers asked that have no list on the server."""
        return [a for a, v in zip(self.advertisers, self.versions) if v == 0]

    @property
    def wrong_type(self) -> List[str]:
        """The advertisers whose lists hold a hash type the call gave none of
        (ask again with ``other_hash``)."""
        return [a for i, a in enumerate(self.advertisers) if self.is_wrong_type(i)]

    @classmethod
    def decode(cls, advertisers: Sequence[str], body: bytes) -> "MatchAdvertisersResult":
        from ._proto import match_pb2

        response = match_pb2.MatchAdvertisersResponse.FromString(body)
        versions = list(response.versions) + [0] * (len(advertisers) - len(response.versions))
        return cls(list(advertisers), bytes(response.matched), versions, bytes(response.wrong_type))
