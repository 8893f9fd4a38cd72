"""Every error tobira raises on purpose, and the code each one carries.

    TobiraError                     base: an ErrorCode, a safe message, an HTTP status
    ├── BadRequest                  400  input we refuse (form fields, bodies, callback parameters)
    │   └── InvalidInstance         400  what the person typed is not a usable server name
    ├── InstanceNotAllowed          403  the operator's allow/deny lists refuse this server
    ├── SignedOut                   401  no valid session cookie
    ├── Forbidden                   403  cross-site request, endpoint not allowed, session mismatch
    ├── MethodNotAllowed            405  a method the route does not take
    ├── PayloadTooLarge             413  request body over its limit
    ├── UnsupportedMediaType        415  wrong Content-Type for the route
    ├── RateLimited                 429  carries retry_after seconds
    └── InstanceError               the instance (or the path to it) failed us
        ├── InstanceNotFound        400  the name does not resolve
        ├── AddressForbidden        400  it resolves to a non-public address (or a port/scheme we never use)
        ├── InstanceUnreachable     502  refused, reset or closed connection, TLS failure
        ├── InstanceTimeout         504  over the connect or total time bound
        ├── InstanceBadAnswer       502  not JSON, wrong shape, too large, a redirect
        ├── InstanceRefused         4xx/5xx the instance's own error, relayed with its status
        ├── NotMisskey              502  answers, but not like a Misskey server
        └── MiAuthUnsupported       502  a Misskey server without MiAuth

Messages are written for the person in front of the browser: they never contain a token, a session id,
a stack trace or the instance's own answer. This module imports no web framework.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """tobira's own error codes, in Misskey's `{"error": {"code"}}` style."""

    INVALID_INSTANCE = "INVALID_INSTANCE"
    INSTANCE_NOT_ALLOWED = "INSTANCE_NOT_ALLOWED"
    INSTANCE_NOT_FOUND = "INSTANCE_NOT_FOUND"
    INSTANCE_ADDRESS_FORBIDDEN = "INSTANCE_ADDRESS_FORBIDDEN"
    INSTANCE_UNREACHABLE = "INSTANCE_UNREACHABLE"
    INSTANCE_TIMEOUT = "INSTANCE_TIMEOUT"
    INSTANCE_BAD_RESPONSE = "INSTANCE_BAD_RESPONSE"
    INSTANCE_REFUSED = "INSTANCE_REFUSED"
    NOT_MISSKEY = "NOT_MISSKEY"
    MIAUTH_UNSUPPORTED = "MIAUTH_UNSUPPORTED"
    INVALID_CALLBACK = "INVALID_CALLBACK"
    NO_SIGN_IN_PENDING = "NO_SIGN_IN_PENDING"
    SIGN_IN_MISMATCH = "SIGN_IN_MISMATCH"
    SIGN_IN_NOT_APPROVED = "SIGN_IN_NOT_APPROVED"
    CREDENTIAL_REQUIRED = "CREDENTIAL_REQUIRED"
    CROSS_SITE_REQUEST = "CROSS_SITE_REQUEST"
    ENDPOINT_NOT_ALLOWED = "ENDPOINT_NOT_ALLOWED"
    INVALID_ENDPOINT = "INVALID_ENDPOINT"
    INVALID_BODY = "INVALID_BODY"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    RATE_LIMITED = "RATE_LIMITED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def id(self) -> str:
        """A stable UUID per code, like Misskey's error ids."""
        return _ERROR_IDS[self]


_ERROR_IDS = {
    ErrorCode.INVALID_INSTANCE: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f01",
    ErrorCode.INSTANCE_NOT_ALLOWED: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f02",
    ErrorCode.INSTANCE_NOT_FOUND: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f03",
    ErrorCode.INSTANCE_ADDRESS_FORBIDDEN: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f04",
    ErrorCode.INSTANCE_UNREACHABLE: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f05",
    ErrorCode.INSTANCE_TIMEOUT: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f06",
    ErrorCode.INSTANCE_BAD_RESPONSE: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f07",
    ErrorCode.NOT_MISSKEY: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f08",
    ErrorCode.INSTANCE_REFUSED: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f25",
    ErrorCode.MIAUTH_UNSUPPORTED: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f09",
    ErrorCode.INVALID_CALLBACK: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f10",
    ErrorCode.NO_SIGN_IN_PENDING: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f11",
    ErrorCode.SIGN_IN_MISMATCH: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f12",
    ErrorCode.SIGN_IN_NOT_APPROVED: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f13",
    ErrorCode.CREDENTIAL_REQUIRED: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f14",
    ErrorCode.CROSS_SITE_REQUEST: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f15",
    ErrorCode.ENDPOINT_NOT_ALLOWED: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f16",
    ErrorCode.INVALID_ENDPOINT: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f17",
    ErrorCode.INVALID_BODY: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f18",
    ErrorCode.PAYLOAD_TOO_LARGE: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f19",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f20",
    ErrorCode.RATE_LIMITED: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f21",
    ErrorCode.NOT_FOUND: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f22",
    ErrorCode.METHOD_NOT_ALLOWED: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f23",
    ErrorCode.INTERNAL_ERROR: "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f24",
}


class TobiraError(Exception):
    """Base of every deliberate error: `code`, `status` and a message safe to show anyone."""

    status = 500
    code = ErrorCode.INTERNAL_ERROR
    default_message = "Something went wrong inside tobira."

    def __init__(self, message: str | None = None, *, code: ErrorCode | None = None) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        super().__init__(self.message)


class BadRequest(TobiraError):
    status = 400
    code = ErrorCode.INVALID_BODY
    default_message = "The request is not valid."


class InvalidInstance(BadRequest):
    code = ErrorCode.INVALID_INSTANCE
    default_message = "That is not a server name tobira can use."


class InstanceNotAllowed(TobiraError):
    status = 403
    code = ErrorCode.INSTANCE_NOT_ALLOWED
    default_message = "Signing in with that server is not allowed here."


class SignedOut(TobiraError):
    status = 401
    code = ErrorCode.CREDENTIAL_REQUIRED
    default_message = "You are not signed in."


class Forbidden(TobiraError):
    status = 403
    code = ErrorCode.CROSS_SITE_REQUEST
    default_message = "This request is not allowed."


class MethodNotAllowed(TobiraError):
    status = 405
    code = ErrorCode.METHOD_NOT_ALLOWED
    default_message = "That method is not allowed here."


class PayloadTooLarge(TobiraError):
    status = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE
    default_message = "The request body is too large."


class UnsupportedMediaType(TobiraError):
    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    default_message = "This route does not accept that content type."


class RateLimited(TobiraError):
    status = 429
    code = ErrorCode.RATE_LIMITED
    default_message = "Too many requests. Please wait a moment and try again."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(message)


class InstanceError(TobiraError):
    """The instance, or the way to it, failed. Subclasses say how."""

    status = 502
    code = ErrorCode.INSTANCE_BAD_RESPONSE
    default_message = "The server did not answer in a way tobira can use."


class InstanceNotFound(InstanceError):
    status = 400
    code = ErrorCode.INSTANCE_NOT_FOUND
    default_message = "No server by that name could be found. Check the spelling."


class AddressForbidden(InstanceError):
    status = 400
    code = ErrorCode.INSTANCE_ADDRESS_FORBIDDEN
    default_message = "That server name points to an address tobira never connects to."


class InstanceUnreachable(InstanceError):
    status = 502
    code = ErrorCode.INSTANCE_UNREACHABLE
    default_message = "The server could not be reached. It may be down; try again later."


class InstanceTimeout(InstanceError):
    status = 504
    code = ErrorCode.INSTANCE_TIMEOUT
    default_message = "The server took too long to answer. Try again later."


class InstanceBadAnswer(InstanceError):
    status = 502
    code = ErrorCode.INSTANCE_BAD_RESPONSE
    default_message = "The server answered something tobira cannot use."


class InstanceRefused(InstanceError):
    """The instance answered an error without Misskey's error shape (e.g. its web framework's 404)."""

    code = ErrorCode.INSTANCE_REFUSED

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(
            "The server has no such API endpoint." if status == 404 else "The server refused the request."
        )


class NotMisskey(InstanceError):
    status = 502
    code = ErrorCode.NOT_MISSKEY
    default_message = "That server does not look like Misskey or one of its forks."


class MiAuthUnsupported(InstanceError):
    status = 502
    code = ErrorCode.MIAUTH_UNSUPPORTED
    default_message = "That server does not support MiAuth sign-in."
