"""Typed errors: every failed call raises a :class:`RosterError` carrying the
gRPC status code the server answered (or the client decided) and its message.

A subclass per code that callers commonly handle, so ``except
NotFoundError:`` reads naturally; every other code raises the base class with
its ``code`` set.
"""

from __future__ import annotations

import enum
from typing import Dict, Type


class StatusCode(enum.IntEnum):
    """gRPC's status codes, as the Roster protocol numbers them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RosterError(Exception):
    """A call failed. ``code`` is its status, ``message`` what the server said."""

    code: StatusCode = StatusCode.UNKNOWN

    def __init__(self, message: str, code: "StatusCode | None" = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class CallCancelledError(RosterError):
    code = StatusCode.CANCELLED


class InvalidArgumentError(RosterError):
    code = StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(RosterError):
    code = StatusCode.DEADLINE_EXCEEDED


class NotFoundError(RosterError):
    code = StatusCode.NOT_FOUND


class PermissionDeniedError(RosterError):
    code = StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(RosterError):
    code = StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(RosterError):
    code = StatusCode.FAILED_PRECONDITION


class UnimplementedError(RosterError):
    code = StatusCode.UNIMPLEMENTED


class InternalError(RosterError):
    code = StatusCode.INTERNAL


class UnavailableError(RosterError):
    """The server could not answer: refused, closed, draining or down."""

    code = StatusCode.UNAVAILABLE


class UnauthenticatedError(RosterError):
    code = StatusCode.UNAUTHENTICATED


class ConnectionFailedError(UnavailableError):
    """The connection could not be opened or was lost: nothing was answered.

    A subclass of :class:`UnavailableError`, as the Swift client reports it.
    """


class ProtocolError(RosterError):
    """The peer broke the protocol (or is not a Roster server)."""

    code = StatusCode.INTERNAL


_BY_CODE: Dict[int, Type[RosterError]] = {
    cls.code: cls
    for cls in (
        CallCancelledError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        UnauthenticatedError,
    )
}


def error_for(code: int, message: str) -> RosterError:
    """The exception for a status ``code`` the server answered with ``message``."""
    try:
        status = StatusCode(code)
    except ValueError:
        return RosterError(f"{message} (status {code})", StatusCode.UNKNOWN)
    cls = _BY_CODE.get(status)
    return cls(message) if cls is not None else RosterError(message, status)
