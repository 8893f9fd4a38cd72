"""The OpenID Connect provider's protocol: authorization requests, codes, token endpoint, userinfo, logout.

    authorize: client_id + redirect_uri (exact; a wrong one is tobira's error page, never a redirect)
               → the rest of the request (errors from here on go back to the app, with `state` and `iss`)
               → the person: signed in and agreed before → a code at once; else tobira's page naming the app
    callback:  the sign-in the page started → the account's claims (and, for an app with `permissions`, its
               Misskey token) → a code, bound to the client, the redirect URI and the PKCE challenge
    token:     client authentication → the code, redeemed once on every replica → an access token and a
               signed ID token
    userinfo:  the access token → the claims its scope allows

Authlib's server classes want a framework request and storage hooks around every step; the checks this
provider needs are few and each is spelled out (and tested) here, with the JOSE work left to joserfc (see
`app.oidc.keys`). Protocol code: no web framework.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import orjson

from app.crypto import CookieCodec
from app.errors import (
    AccessDenied,
    ConsentRequired,
    InvalidClient,
    InvalidGrant,
    InvalidLogout,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    LoginRequired,
    OAuthError,
    RegistrationNotSupported,
    RequestNotSupported,
    RequestUriNotSupported,
    UnknownClient,
    UnregisteredRedirect,
    UnsupportedGrantType,
    UnsupportedResponseType,
)
from app.ledger import ACCESS_TOKEN_SECONDS, Ledger
from app.oidc.claims import PROFILE_CLAIMS, for_scope
from app.oidc.clients import Client
from app.oidc.keys import KeyRing

ID_TOKEN_SECONDS = 3600
PKCE_VALUE = re.compile(r"[A-Za-z0-9._~-]{43,128}")
PROMPTS = frozenset({"none", "login", "consent", "select_account"})
SCOPES = ("openid", "profile")
MAX_STATE = 2048
MAX_NONCE = 512
MAX_HINT = 320
SINGLE_VALUED = (
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "login_hint",
    "request",
    "request_uri",
)

PATHS = {
    "authorization_endpoint": "/oidc/authorize",
    "token_endpoint": "/oidc/token",
    "userinfo_endpoint": "/oidc/userinfo",
    "jwks_uri": "/oidc/jwks",
    "end_session_endpoint": "/oidc/logout",
}


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """An authorization request tobira accepted, waiting for the person (kept in the ledger by its id)."""

    id: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    prompt: tuple[str, ...]
    max_age: int | None
    login_hint: str | None
    created: float

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes | None) -> AuthorizationRequest | None:
        if data is None:
            return None
        try:
            fields = orjson.loads(data)
            fields["prompt"] = tuple(fields["prompt"])
            return cls(**fields)
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return None


@dataclass(frozen=True, slots=True)
class Account:
    """Who signed in, as an app is told: every claim, when they proved it, and the app's Misskey token."""

    claims: dict[str, Any]
    auth_time: float
    misskey_token: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What an authorization request leads to now: a redirect to the app (a code or an error), or tobira's
    page (`continue_as` when the signed-in account may be offered)."""

    location: str | None = None
    continue_as: bool = False


@dataclass(slots=True)
class Grant:
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    auth_time: float
    claims: dict[str, Any]
    misskey_token: str | None = None


def challenge_of(verifier: str) -> str:
    """RFC 7636 S256."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def half_hash(value: str) -> str:
    """`at_hash`: the left half of the SHA-256 of the access token (both RS256 and ES256 use SHA-256)."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def with_query(uri: str, params: Mapping[str, str | None]) -> str:
    """`uri` with `params` added to its query (RFC 6749 3.1.2: the registered query is kept)."""
    parts = urlsplit(uri)
    added = urlencode([(name, value) for name, value in params.items() if value is not None])
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def hint_host(hint: str | None) -> tuple[str | None, str | None]:
    """(username, server) a `login_hint` names: `@alice@misskey.io`, `alice@misskey.io` or `misskey.io`."""
    if not hint:
        return None, None
    text = hint.strip().removeprefix("@")
    if "@" in text:
        user, _, host = text.partition("@")
        return user.lower() or None, host.lower() or None
    return None, text.lower() or None


def refuse_unsupported(params: Mapping[str, str], repeated: Sequence[str]) -> None:
    """Raises for what tobira never does: a parameter twice, request objects, registration, anything but
    the code flow in the query."""
    if repeated:
        raise InvalidRequest(f"repeated parameter: {', '.join(sorted(repeated))}")
    if "request" in params:
        raise RequestNotSupported("request objects are not supported")
    if "request_uri" in params:
        raise RequestUriNotSupported("request_uri is not supported")
    if "registration" in params:
        raise RegistrationNotSupported("registration is not supported")
    if params.get("response_type") != "code":
        raise UnsupportedResponseType("response_type must be code")
    if params.get("response_mode", "query") != "query":
        raise InvalidRequest("response_mode must be query")


def checked_scope(params: Mapping[str, str]) -> str:
    """The scopes tobira knows among those asked for; InvalidScope without `openid`."""
    scopes = params.get("scope", "").split()
    if "openid" not in scopes:
        raise InvalidScope("scope must include openid")
    return " ".join(name for name in SCOPES if name in scopes)


def pkce_challenge(client: Client, params: Mapping[str, str]) -> str | None:
    """The S256 challenge (RFC 7636); required of public clients, `plain` refused."""
    challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
    if challenge is not None:
        if method != "S256":
            raise InvalidRequest("code_challenge_method must be S256")
        if not PKCE_VALUE.fullmatch(challenge):
            raise InvalidRequest("code_challenge is malformed")
    elif method is not None:
        raise InvalidRequest("code_challenge_method without code_challenge")
    elif not client.confidential:
        raise InvalidRequest("PKCE (code_challenge with S256) is required of public clients")
    return challenge


def max_age_of(params: Mapping[str, str]) -> int | None:
    if "max_age" not in params:
        return None
    if not params["max_age"].isdigit() or len(params["max_age"]) > 10:
        raise InvalidRequest("max_age must be a non-negative integer")
    return int(params["max_age"])


def basic_credentials(authorization: str) -> tuple[str, str]:
    """(client_id, secret) from an `Authorization: Basic` header (RFC 6749 2.3.1: each form-encoded)."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("unsupported client authentication")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials") from None
    name, colon, password = decoded.partition(":")
    if not colon:
        raise InvalidClient("malformed Basic credentials")
    return unquote(name), unquote(password)


class Provider:
    """tobira's OpenID provider, over the clients file, the ledger and the signing keys."""

    def __init__(
        self,
        issuer: str,
        clients: Mapping[str, Client],
        *,
        ledger: Ledger,
        keys: KeyRing,
        secret_keys: Sequence[str],
        clock: Callable[[], float],
    ) -> None:
        self.issuer = issuer
        self.clients = dict(clients)
        self._ledger = ledger
        self.keys = keys
        self._codes = CookieCodec(secret_keys, "oidc-code")
        self._tokens = CookieCodec(secret_keys, "oidc-access-token")
        self._clock = clock

    # --- discovery ---------------------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The discovery document (OpenID Connect Discovery 1.0, RFC 8414, RFC 9207)."""
        return {
            "issuer": self.issuer,
            **{name: self.issuer + path for name, path in PATHS.items()},
            "scopes_supported": list(SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(KeyRing.algorithms),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "azp",
                "at_hash",
                *PROFILE_CLAIMS,
            ],
            "prompt_values_supported": sorted(PROMPTS),
            "authorization_response_iss_parameter_supported": True,
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
        }

    # --- authorize ---------------------------------------------------------------------------------------

    def client_and_redirect(
        self, params: Mapping[str, str], repeated: Sequence[str] = ()
    ) -> tuple[Client, str]:
        """The client and its redirect URI, compared exactly with the registered ones (each given once).

        Raises UnknownClient and UnregisteredRedirect: shown on tobira's page, never sent to any URI."""
        client = self.clients.get(params.get("client_id", ""))
        if client is None or "client_id" in repeated:
            raise UnknownClient()
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris or "redirect_uri" in repeated:
            raise UnregisteredRedirect()
        return client, redirect_uri

    def check_request(
        self, client: Client, redirect_uri: str, params: Mapping[str, str], repeated: Sequence[str]
    ) -> AuthorizationRequest:
        """The rest of an authorization request. Raises the OAuthError that goes back to the app."""
        refuse_unsupported(params, repeated)
        challenge = pkce_challenge(client, params)
        prompt = tuple(params.get("prompt", "").split())
        if not set(prompt) <= PROMPTS:
            raise InvalidRequest("unknown prompt value")
        if "none" in prompt and len(prompt) > 1:
            raise InvalidRequest("prompt=none cannot be combined with other values")
        for name, limit in (("state", MAX_STATE), ("nonce", MAX_NONCE), ("login_hint", MAX_HINT)):
            if len(params.get(name, "")) > limit:
                raise InvalidRequest(f"{name} is too long")
        return AuthorizationRequest(
            id=secrets.token_urlsafe(24),
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scope=checked_scope(params),
            state=params.get("state"),
            nonce=params.get("nonce"),
            code_challenge=challenge,
            prompt=prompt,
            max_age=max_age_of(params),
            login_hint=params.get("login_hint") or None,
            created=self._clock(),
        )

    def error_location(self, redirect_uri: str, error: OAuthError, state: str | None) -> str:
        return with_query(
            redirect_uri,
            {
                "error": error.error,
                "error_description": error.description,
                "state": state,
                "iss": self.issuer,
            },
        )

    async def keep_request(self, request: AuthorizationRequest) -> None:
        await self._ledger.keep_authorization_request(request.id, request.to_bytes())

    async def request(self, request_id: str) -> AuthorizationRequest | None:
        if not request_id or len(request_id) > 64:
            return None
        found = AuthorizationRequest.from_bytes(await self._ledger.authorization_request(request_id))
        # A client removed from the clients file since (tobira restarted) can no longer be answered.
        return found if found is not None and found.client_id in self.clients else None

    def client(self, request: AuthorizationRequest) -> Client:
        return self.clients[request.client_id]

    def session_fits(self, request: AuthorizationRequest, account: Account | None) -> bool:
        """Whether the account signed in to tobira answers this request without a new sign-in."""
        if account is None or self.client(request).permissions or "login" in request.prompt:
            return False
        if request.max_age is not None and self._clock() - account.auth_time > request.max_age:
            return False
        if not self.client(request).allows_instance(account.claims["misskey_host"]):
            return False
        user, host = hint_host(request.login_hint)
        username, _, own_host = account.claims["preferred_username"].partition("@")
        return (host is None or host == own_host.lower()) and (user is None or user == username.lower())

    async def decide(self, request: AuthorizationRequest, account: Account | None) -> Decision:
        """What the request leads to for a browser signed in as `account` (or not signed in)."""
        fits = self.session_fits(request, account)
        agreed = account is not None and request.client_id in await self.consents(account.claims["sub"])
        redirect, state = request.redirect_uri, request.state
        if "none" in request.prompt:
            if not fits or account is None:
                return Decision(self.error_location(redirect, LoginRequired("no usable sign-in"), state))
            if not agreed:
                return Decision(self.error_location(redirect, ConsentRequired("not agreed yet"), state))
        if (
            fits
            and agreed
            and account is not None
            and not {"consent", "select_account"} & set(request.prompt)
        ):
            return Decision(await self.issue_code(request, account))
        return Decision(continue_as=account is not None)

    async def issue_code(self, request: AuthorizationRequest, account: Account) -> str:
        """A new code for `request`, bound to its client, redirect URI and PKCE challenge: the redirect."""
        grant = Grant(
            client_id=request.client_id,
            redirect_uri=request.redirect_uri,
            scope=request.scope,
            nonce=request.nonce,
            code_challenge=request.code_challenge,
            auth_time=account.auth_time,
            claims=account.claims,
            misskey_token=account.misskey_token if self.client(request).permissions else None,
        )
        code = secrets.token_urlsafe(32)
        await self._ledger.keep_code(code, self._codes.encode(asdict(grant)))
        await self._ledger.drop_authorization_request(request.id)
        await self.agree(account.claims["sub"], request.client_id)
        return with_query(request.redirect_uri, {"code": code, "state": request.state, "iss": self.issuer})

    async def decline(self, request: AuthorizationRequest) -> str:
        """The person declined on tobira's page: the redirect that tells the app."""
        await self._ledger.drop_authorization_request(request.id)
        denied = AccessDenied("the person declined")
        return self.error_location(request.redirect_uri, denied, request.state)

    # --- consent -----------------------------------------------------------------------------------------

    async def consents(self, sub: str) -> list[str]:
        return [client_id for client_id in await self._ledger.consents(sub) if client_id in self.clients]

    async def agree(self, sub: str, client_id: str) -> None:
        known = await self.consents(sub)
        if client_id not in known:
            await self._ledger.keep_consents(sub, [*known, client_id])

    async def withdraw(self, sub: str, client_id: str) -> None:
        await self._ledger.keep_consents(
            sub, [item for item in await self.consents(sub) if item != client_id]
        )

    # --- token -------------------------------------------------------------------------------------------

    async def authenticate(
        self, form: Mapping[str, str], authorization: str | None, address: str = ""
    ) -> Client:
        """The client a token request comes from (RFC 6749 2.3). Raises InvalidClient, InvalidRequest.

        A hashed secret costs argon2's time and memory to check: after a wrong one, the same client from the
        same address (`address`, as rate limits key it) waits a second before another is checked."""
        basic_id: str | None = None
        basic_secret: str | None = None
        if authorization is not None:
            basic_id, basic_secret = basic_credentials(authorization)
            if "client_secret" in form:
                raise InvalidRequest("more than one client authentication method")
            if "client_id" in form and form["client_id"] != basic_id:
                raise InvalidRequest("client_id differs from the authenticated client")
        client_id = basic_id if basic_id is not None else form.get("client_id")
        client = self.clients.get(client_id or "")
        if client is None:
            raise InvalidClient("unknown client")
        secret = basic_secret if basic_secret is not None else form.get("client_secret")
        if client.confidential:
            throttle = f"{address}:{client.client_id}"
            if client.client_secret_hash is not None and await self._ledger.client_failed_recently(throttle):
                raise InvalidClient("a client authentication failed just now: try again in a second")
            if secret is None or not client.secret_matches(secret):
                await self._ledger.note_client_failure(throttle)
                raise InvalidClient("client authentication failed")
        elif secret is not None:
            raise InvalidClient("this client has no secret")
        return client

    async def exchange(
        self, form: Mapping[str, str], authorization: str | None, address: str = ""
    ) -> dict[str, Any]:
        """The token endpoint's answer (`address`: who asks, see `authenticate`). Raises OAuthError."""
        client = await self.authenticate(form, authorization, address)
        if form.get("grant_type") != "authorization_code":
            raise UnsupportedGrantType("only authorization_code is supported")
        code = form.get("code")
        if not code or len(code) > 128:
            raise InvalidRequest("code is missing")
        sealed, first = await self._ledger.redeem_code(code)
        if not first:
            await self._ledger.revoke_code_grant(code)
            raise InvalidGrant("the code was already used")
        data = self._codes.decode(sealed.decode()) if sealed else None
        if data is None:
            raise InvalidGrant("unknown or expired code")
        grant = Grant(**data)
        if grant.client_id != client.client_id:
            raise InvalidGrant("the code was issued to another client")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise InvalidGrant("redirect_uri differs from the authorization request's")
        verifier = form.get("code_verifier")
        if grant.code_challenge is not None:
            if verifier is None or not PKCE_VALUE.fullmatch(verifier):
                raise InvalidGrant("code_verifier is missing or malformed")
            if not hmac.compare_digest(challenge_of(verifier), grant.code_challenge):
                raise InvalidGrant("code_verifier does not match the code_challenge")
        elif verifier is not None:
            raise InvalidGrant("code_verifier sent for a code issued without code_challenge")
        return await self._tokens_for(client, grant, code)

    async def _tokens_for(self, client: Client, grant: Grant, code: str) -> dict[str, Any]:
        now = int(self._clock())
        access_token = secrets.token_urlsafe(32)
        shown = for_scope(grant.claims, grant.scope)
        await self._ledger.keep_access_token(
            access_token, self._tokens.encode({"claims": shown, "exp": now + ACCESS_TOKEN_SECONDS}), code
        )
        id_claims: dict[str, Any] = {
            **shown,
            "iss": self.issuer,
            "aud": client.client_id,
            "azp": client.client_id,
            "iat": now,
            "exp": now + ID_TOKEN_SECONDS,
            "auth_time": int(grant.auth_time),
            "at_hash": half_hash(access_token),
        }
        if grant.nonce is not None:
            id_claims["nonce"] = grant.nonce
        answer: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_SECONDS,
            "scope": grant.scope,
            "id_token": await self.keys.sign(id_claims, client.id_token_signed_response_alg),
        }
        if client.permissions and client.confidential and grant.misskey_token is not None:
            answer["misskey_access_token"] = grant.misskey_token
            answer["misskey_host"] = grant.claims["misskey_host"]
        return answer

    # --- userinfo ----------------------------------------------------------------------------------------

    async def userinfo(self, authorization: str | None) -> dict[str, Any]:
        """The claims an access token may see (RFC 6750 bearer). Raises InvalidToken, InvalidRequest."""
        if not authorization:
            raise InvalidRequest("no access token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or len(token) > 512:
            raise InvalidToken("malformed access token")
        sealed = await self._ledger.access_token(token.strip())
        data = self._tokens.decode(sealed.decode()) if sealed else None
        if data is None or self._clock() >= data["exp"]:
            raise InvalidToken("unknown or expired access token")
        claims: dict[str, Any] = data["claims"]
        return claims

    # --- logout ------------------------------------------------------------------------------------------

    async def logout_target(self, params: Mapping[str, str]) -> tuple[str | None, str | None]:
        """(the `sub` an `id_token_hint` names, the URI to go back to afterwards, `state` added) for an
        RP-initiated logout. Raises InvalidLogout: a hint tobira did not sign, an unregistered URI."""
        hint, client_id = params.get("id_token_hint"), params.get("client_id")
        sub: str | None = None
        if hint:
            claims = await self.keys.verify(hint)
            if claims is None or claims.get("iss") != self.issuer:
                raise InvalidLogout()
            aud = claims.get("aud")
            audience = aud if isinstance(aud, str) else None
            if client_id is not None and client_id != audience:
                raise InvalidLogout()
            client_id, sub = audience, claims.get("sub")
        target = params.get("post_logout_redirect_uri")
        if target is None:
            return sub, None
        client = self.clients.get(client_id or "")
        if client is None or target not in client.post_logout_redirect_uris:
            raise InvalidLogout()
        return sub, with_query(target, {"state": params.get("state")})
