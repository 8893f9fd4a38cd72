"""Every error tobira raises on purpose: one class per meaning, each with its code, status, message and page.

    TobiraError                     500  base: an ErrorCode, a safe message, an HTTP status, a page
    ├── BadRequest                  400  a request body we refuse (not JSON, not an object, bad multipart)
    │   ├── InvalidInstance         400  what the person typed is not a usable server name
    │   │   └── NoInstanceTyped     400  nothing was typed at all
    │   ├── InvalidCallback         400  a callback without (or with a malformed) session, token or state
    │   ├── NoSignInPending         400  this browser has no sign-in under way (expired.html)
    │   │   └── SignInFinished      400  the sign-in was already finished (a replayed callback)
    │   ├── InvalidEndpoint         400  not a plain API endpoint name
    │   ├── UnknownClient           400  an OpenID request from an app tobira does not know (never redirected)
    │   ├── UnregisteredRedirect    400  a redirect_uri the app did not register, exactly (never redirected)
    │   └── InvalidLogout           400  a logout request tobira cannot trust (a bad id_token_hint or URI)
    ├── SignedOut                   401  no valid session cookie
    ├── Forbidden                   403  refused (a group)
    │   ├── CrossSiteRequest        403  a request from another site where only tobira's own pages may ask
    │   ├── InstanceNotAllowed      403  the operator's allow/deny lists refuse this server
    │   ├── EndpointNotAllowed      403  the proxy does not forward this endpoint
    │   ├── SignInMismatch          403  a callback for a sign-in this browser did not start
    │   ├── SignInNotApproved       403  the server says the sign-in was not approved (not_approved.html)
    │   └── SiteNotAllowed          403  forward authentication: the access rules refuse this account here
    ├── NotFound                    404  no such route
    ├── MethodNotAllowed            405  a method the route does not take
    ├── PayloadTooLarge             413  request body over its limit
    ├── UnsupportedMediaType        415  wrong Content-Type for the route
    ├── RateLimited                 429  carries retry_after seconds
    ├── StoreUnavailable            503  tobira's own store (SQLite, Redis) does not answer
    └── InstanceError               502  the instance (or the path to it) failed us (a group)
        ├── InstanceNotFound        400  the name does not resolve
        ├── AddressForbidden        400  it resolves to a non-public address (or a port/scheme we never use)
        ├── InstanceUnreachable     502  refused, reset or closed connection, TLS failure
        │   └── InstanceBusy        502  a 429 or 5xx where api/meta should be
        ├── InstanceTimeout         504  over the connect or total time bound
        ├── InstanceBadAnswer       502  not JSON, wrong shape, too large, a redirect
        ├── InstanceRefused         4xx/5xx the instance's own error without Misskey's shape
        ├── NotMisskey              502  answers, but not like a Misskey server
        └── MiAuthUnsupported       502  no sign-in method tobira may use fits this server

    OAuthError                      400  RFC 6749's errors: `{"error", "error_description"}` from the token
    │                                    and userinfo endpoints, or a redirect to the app from authorize
    ├── InvalidRequest / InvalidScope / UnsupportedResponseType / RequestNotSupported /
    │   RequestUriNotSupported / RegistrationNotSupported / AccessDenied / LoginRequired / ConsentRequired /
    │   InvalidGrant / UnsupportedGrantType / UnauthorizedClient       400 (or a redirect)
    ├── InvalidClient               401  client authentication failed (`WWW-Authenticate: Basic`)
    ├── InvalidToken                401  userinfo: an unknown, expired or forged access token (RFC 6750)
    └── TemporarilyUnavailable      503  the signing keys (the store) are not available

A class decides everything about its error; a raise names the class and, at most, a message that says more
than the class's own (why a name is not usable, which body was refused). Messages are written for the person
in front of the browser: they never contain a token, a session id, a stack trace or the instance's own
answer. Every default message is marked for translation (`N_`), so pages show it in the person's language.
This module imports no web framework.
"""

from __future__ import annotations

import enum

# The common stem of tobira's error ids; each code appends its own two-digit number.
ID_STEM = "5c0e4d4e-7b36-4c3e-9a0c-7d1b9d6b2f"


def N_(message: str) -> str:
    """Marks a message for translation (app.catalogues extracts it); pages translate it when shown."""
    return message


class ErrorCode(enum.StrEnum):
    """tobira's own error codes, in Misskey's `{"error": {"code", "id"}}` style. A code's UUID-shaped id is
    made from its place in this list: add new codes at the end and never reorder (clients match on ids)."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[str]) -> str:
        return name

    INVALID_INSTANCE = enum.auto()
    INSTANCE_NOT_ALLOWED = enum.auto()
    INSTANCE_NOT_FOUND = enum.auto()
    INSTANCE_ADDRESS_FORBIDDEN = enum.auto()
    INSTANCE_UNREACHABLE = enum.auto()
    INSTANCE_TIMEOUT = enum.auto()
    INSTANCE_BAD_RESPONSE = enum.auto()
    NOT_MISSKEY = enum.auto()
    MIAUTH_UNSUPPORTED = enum.auto()
    INVALID_CALLBACK = enum.auto()
    NO_SIGN_IN_PENDING = enum.auto()
    SIGN_IN_MISMATCH = enum.auto()
    SIGN_IN_NOT_APPROVED = enum.auto()
    CREDENTIAL_REQUIRED = enum.auto()
    CROSS_SITE_REQUEST = enum.auto()
    ENDPOINT_NOT_ALLOWED = enum.auto()
    INVALID_ENDPOINT = enum.auto()
    INVALID_BODY = enum.auto()
    PAYLOAD_TOO_LARGE = enum.auto()
    UNSUPPORTED_MEDIA_TYPE = enum.auto()
    RATE_LIMITED = enum.auto()
    NOT_FOUND = enum.auto()
    METHOD_NOT_ALLOWED = enum.auto()
    INTERNAL_ERROR = enum.auto()
    INSTANCE_REFUSED = enum.auto()
    OIDC_UNKNOWN_CLIENT = enum.auto()
    OIDC_UNREGISTERED_REDIRECT = enum.auto()
    OIDC_INVALID_LOGOUT = enum.auto()
    ACCESS_DENIED = enum.auto()
    STORE_UNAVAILABLE = enum.auto()

    @property
    def id(self) -> str:
        """A stable UUID per code, like Misskey's error ids."""
        return f"{ID_STEM}{_NUMBERS[self]:02d}"


_NUMBERS = {code: number for number, code in enumerate(ErrorCode, start=1)}


class TobiraError(Exception):
    """Base of every deliberate error: `code`, `status`, a message safe to show anyone, and the `page`
    (a template) a browser is shown."""

    status = 500
    code = ErrorCode.INTERNAL_ERROR
    default_message = N_("Something went wrong inside tobira.")
    page = "error.html"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class BadRequest(TobiraError):
    status = 400
    code = ErrorCode.INVALID_BODY
    default_message = N_("The request is not valid.")


class InvalidInstance(BadRequest):
    code = ErrorCode.INVALID_INSTANCE
    default_message = N_("That is not a server name tobira can use.")


class NoInstanceTyped(InvalidInstance):
    default_message = N_("Type the server you use, for example misskey.io.")


class InvalidCallback(BadRequest):
    code = ErrorCode.INVALID_CALLBACK
    default_message = N_("The sign-in link is incomplete.")


class NoSignInPending(BadRequest):
    code = ErrorCode.NO_SIGN_IN_PENDING
    default_message = N_("This sign-in has expired or is already finished. Please sign in again.")
    page = "expired.html"


class SignInFinished(NoSignInPending):
    default_message = N_("This sign-in is already finished.")


class InvalidEndpoint(BadRequest):
    code = ErrorCode.INVALID_ENDPOINT
    default_message = N_("That is not an API endpoint name.")


class UnknownClient(BadRequest):
    code = ErrorCode.OIDC_UNKNOWN_CLIENT
    default_message = N_("The app that sent you here is not registered with this tobira.")


class UnregisteredRedirect(BadRequest):
    code = ErrorCode.OIDC_UNREGISTERED_REDIRECT
    default_message = N_("The app that sent you here asked to return to an address it did not register.")


class InvalidLogout(BadRequest):
    code = ErrorCode.OIDC_INVALID_LOGOUT
    default_message = N_("This sign-out request cannot be trusted, so nothing was done.")


class SignedOut(TobiraError):
    status = 401
    code = ErrorCode.CREDENTIAL_REQUIRED
    default_message = N_("You are not signed in.")


class Forbidden(TobiraError):
    """Refusals: a group, never raised itself (each refusal has a class and a code of its own)."""

    status = 403


class CrossSiteRequest(Forbidden):
    code = ErrorCode.CROSS_SITE_REQUEST
    default_message = N_("This request came from another site.")


class InstanceNotAllowed(Forbidden):
    code = ErrorCode.INSTANCE_NOT_ALLOWED
    default_message = N_("Signing in with that server is not allowed here.")


class EndpointNotAllowed(Forbidden):
    code = ErrorCode.ENDPOINT_NOT_ALLOWED
    default_message = N_("tobira does not forward this API endpoint.")


class SignInMismatch(Forbidden):
    code = ErrorCode.SIGN_IN_MISMATCH
    default_message = N_("This sign-in was not started in this browser. Please sign in again from here.")


class SignInNotApproved(Forbidden):
    code = ErrorCode.SIGN_IN_NOT_APPROVED
    default_message = N_("The sign-in was not approved on your server. You can start again.")
    page = "not_approved.html"


class SiteNotAllowed(Forbidden):
    code = ErrorCode.ACCESS_DENIED
    default_message = N_(
        "Your account may not open this site. Use another account, or ask the site's operator."
    )
    page = "access_denied.html"


class NotFound(TobiraError):
    status = 404
    code = ErrorCode.NOT_FOUND
    default_message = N_("There is nothing here.")


class MethodNotAllowed(TobiraError):
    status = 405
    code = ErrorCode.METHOD_NOT_ALLOWED
    default_message = N_("That method is not allowed here.")


class PayloadTooLarge(TobiraError):
    status = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE
    default_message = N_("The request body is too large.")


class UnsupportedMediaType(TobiraError):
    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    default_message = N_("This route does not accept that content type.")


class RateLimited(TobiraError):
    status = 429
    code = ErrorCode.RATE_LIMITED
    default_message = N_("Too many requests. Please wait a moment and try again.")

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(message)


class StoreUnavailable(TobiraError):
    """tobira's store failed (`sqlite3.Error`, `redis.RedisError`): nothing that needs it can go on now, and
    nothing was half done; it works again by itself when the store is back."""

    status = 503
    code = ErrorCode.STORE_UNAVAILABLE
    default_message = N_("tobira cannot reach its storage right now. Please try again in a moment.")


class InstanceError(TobiraError):
    """The instance, or the way to it, failed: a group, never raised itself; subclasses say how."""

    status = 502


class InstanceNotFound(InstanceError):
    status = 400
    code = ErrorCode.INSTANCE_NOT_FOUND
    default_message = N_("No server by that name could be found. Check the spelling.")


class AddressForbidden(InstanceError):
    status = 400
    code = ErrorCode.INSTANCE_ADDRESS_FORBIDDEN
    default_message = N_("That server name points to an address tobira never connects to.")


class InstanceUnreachable(InstanceError):
    status = 502
    code = ErrorCode.INSTANCE_UNREACHABLE
    default_message = N_("The server could not be reached. It may be down; try again later.")


class InstanceBusy(InstanceUnreachable):
    default_message = N_("The server is busy or under maintenance right now. Try again later.")


class InstanceTimeout(InstanceError):
    status = 504
    code = ErrorCode.INSTANCE_TIMEOUT
    default_message = N_("The server took too long to answer. Try again later.")


class InstanceBadAnswer(InstanceError):
    status = 502
    code = ErrorCode.INSTANCE_BAD_RESPONSE
    default_message = N_("The server answered something tobira cannot use.")


class InstanceRefused(InstanceError):
    """The instance answered an error without Misskey's error shape (e.g. its web framework's 404)."""

    code = ErrorCode.INSTANCE_REFUSED
    default_message = N_("The server refused the request.")

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(N_("The server has no such API endpoint.") if status == 404 else None)


class NotMisskey(InstanceError):
    status = 502
    code = ErrorCode.NOT_MISSKEY
    default_message = N_("That server does not look like Misskey or one of its forks.")


class MiAuthUnsupported(InstanceError):
    status = 502
    code = ErrorCode.MIAUTH_UNSUPPORTED
    default_message = N_("That server does not support MiAuth sign-in.")


class OAuthError(Exception):
    """An RFC 6749 error: `error` (the registered code), a description for developers (English), a status."""

    error = "invalid_request"
    status = 400

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(f"{self.error}: {description}")

    def as_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class RequestNotSupported(OAuthError):
    error = "request_not_supported"


class RequestUriNotSupported(OAuthError):
    error = "request_uri_not_supported"


class RegistrationNotSupported(OAuthError):
    error = "registration_not_supported"


class AccessDenied(OAuthError):
    error = "access_denied"


class LoginRequired(OAuthError):
    error = "login_required"


class ConsentRequired(OAuthError):
    error = "consent_required"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class InvalidClient(OAuthError):
    error = "invalid_client"
    status = 401


class InvalidToken(OAuthError):
    error = "invalid_token"
    status = 401


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status = 503


def misskey_shape(error: TobiraError) -> dict[str, dict[str, str]]:
    """Misskey's own error shape, so clients written for Misskey handle tobira's errors alike."""
    return {"error": {"code": str(error.code), "message": error.message, "id": error.code.id}}


def error_classes() -> list[type[TobiraError]]:
    """Every error class, each after its base (the base of all first)."""
    found: list[type[TobiraError]] = [TobiraError]
    for cls in found:
        found.extend(cls.__subclasses__())
    return found


def code_messages() -> dict[ErrorCode, str]:
    """Each code's own message: that of the class that introduces the code (the generic one of its kind)."""
    messages: dict[ErrorCode, str] = {}
    for cls in error_classes():
        if "code" in vars(cls):
            messages.setdefault(cls.code, cls.default_message)
    return messages
