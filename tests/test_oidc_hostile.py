"""The OpenID provider's catalogue of attacks, as named tables: redirect URIs that almost match, unknown
clients, malformed authorization requests, codes replayed, swapped, or redeemed with the wrong verifier,
forged tokens (`alg: none`, HS256 keyed with the public key) offered back. Each answers as the RFCs say:
an error page on tobira before the client and redirect URI are known, an error sent back to the app after,
RFC 6749 JSON from the token endpoint, RFC 6750 from userinfo."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, hmac
from joserfc.jwk import KeySet, RSAKey

from app.standin import RunningStandin
from tests.conftest import Browser, TobiraProcess, start_tobira
from tests.oidc_support import (
    SECRET,
    authorize,
    clients_file,
    code_flow,
    pkce,
    query,
    token_request,
)

SPA_CB = "http://127.0.0.1:9/spa/cb"
WIKI_CB = "http://127.0.0.1:9/cb?x=1"
RP = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def tobira(tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin) -> Iterator[TobiraProcess]:
    folder = tmp_path_factory.mktemp("tobira-oidc-hostile")
    server = start_tobira(
        folder, TOBIRA_DEV_INSTANCES=standin.url, TOBIRA_OIDC_CLIENTS=str(clients_file(folder, RP))
    )
    yield server
    server.stop()


# --- before the client and its redirect URI are known: tobira's page, never a redirect -------------------

REDIRECT_TRICKS = {
    "one character": "http://127.0.0.1:9/spa/cc",
    "trailing slash": "http://127.0.0.1:9/spa/cb/",
    "path case": "http://127.0.0.1:9/SPA/cb",
    "scheme case": "HTTP://127.0.0.1:9/spa/cb",
    "fragment": "http://127.0.0.1:9/spa/cb#frag",
    "empty fragment": "http://127.0.0.1:9/spa/cb#",
    "encoded slash": "http://127.0.0.1:9/spa%2Fcb",
    "encoded letter": "http://127.0.0.1:9/spa/%63b",
    "dot segments": "http://127.0.0.1:9/spa/../spa/cb",
    "query added": "http://127.0.0.1:9/spa/cb?next=https://evil.example",
    "port spelled": "http://127.0.0.1:09/spa/cb",
    "default port": "http://127.0.0.1:9/spa/cb:80",
    "user info": "http://127.0.0.1:9@evil.example/spa/cb",
    "other host": "https://evil.example/spa/cb",
    "another client's": "http://127.0.0.1:9/cb?x=1",
    "missing": "",
    "spaces": " http://127.0.0.1:9/spa/cb",
    "null byte": "http://127.0.0.1:9/spa/cb\x00",
}


@pytest.mark.parametrize("name", REDIRECT_TRICKS)
def test_a_redirect_uri_that_is_not_exactly_registered_is_an_error_page(
    browser: Browser, tobira: TobiraProcess, name: str
) -> None:
    answer = authorize(
        browser,
        client_id="spa",
        redirect_uri=REDIRECT_TRICKS[name],
        response_type="code",
        scope="openid",
        state="s",
        code_challenge=pkce()[1],
        code_challenge_method="S256",
    )
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/html")
    assert "OIDC_UNREGISTERED_REDIRECT" in answer.text


UNKNOWN_CLIENTS = {"unknown": "nope", "empty": "", "case": "SPA", "space": "spa ", "missing": None}


@pytest.mark.parametrize("name", UNKNOWN_CLIENTS)
def test_an_unknown_client_is_an_error_page(browser: Browser, tobira: TobiraProcess, name: str) -> None:
    params = {"redirect_uri": SPA_CB, "response_type": "code", "scope": "openid"}
    if UNKNOWN_CLIENTS[name] is not None:
        params["client_id"] = str(UNKNOWN_CLIENTS[name])
    answer = authorize(browser, **params)
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "OIDC_UNKNOWN_CLIENT" in answer.text


def test_a_repeated_client_id_is_an_error_page(browser: Browser, tobira: TobiraProcess) -> None:
    answer = browser.client.get(
        tobira.url + "/oidc/authorize?client_id=nope&client_id=spa&redirect_uri=" + SPA_CB
    )
    assert answer.status_code == 400 and "location" not in answer.headers


# --- after: errors go back to the app, with state and iss ------------------------------------------------

REQUEST_TRICKS = {
    "implicit": ({"response_type": "token"}, "unsupported_response_type"),
    "hybrid": ({"response_type": "code id_token"}, "unsupported_response_type"),
    "no response_type": ({"response_type": None}, "unsupported_response_type"),
    "no openid scope": ({"scope": "profile"}, "invalid_scope"),
    "plain PKCE": ({"code_challenge_method": "plain"}, "invalid_request"),
    "no PKCE for a public client": (
        {"code_challenge": None, "code_challenge_method": None},
        "invalid_request",
    ),
    "short challenge": ({"code_challenge": "abc"}, "invalid_request"),
    "request object": ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    "request_uri": ({"request_uri": "https://evil.example/r"}, "request_uri_not_supported"),
    "prompt none and login": ({"prompt": "none login"}, "invalid_request"),
    "unknown prompt": ({"prompt": "bogus"}, "invalid_request"),
    "negative max_age": ({"max_age": "-1"}, "invalid_request"),
    "fragment response mode": ({"response_mode": "fragment"}, "invalid_request"),
    "huge state": ({"state": "s" * 5000}, "invalid_request"),
}


@pytest.mark.parametrize("name", REQUEST_TRICKS)
def test_a_bad_request_goes_back_to_the_app(browser: Browser, tobira: TobiraProcess, name: str) -> None:
    changes, error = REQUEST_TRICKS[name]
    params: dict[str, str | None] = {
        "client_id": "spa",
        "redirect_uri": SPA_CB,
        "response_type": "code",
        "scope": "openid",
        "state": "st",
        "code_challenge": pkce()[1],
        "code_challenge_method": "S256",
    }
    params.update(changes)
    answer = authorize(browser, **{k: v for k, v in params.items() if v is not None})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(SPA_CB + "?")
    sent = query(answer.headers["location"])
    assert sent["error"] == error
    assert sent["iss"] == tobira.url
    assert sent["state"] == params["state"]  # as sent, even when the request is refused
    assert "code" not in sent


def test_a_repeated_parameter_is_refused(browser: Browser, tobira: TobiraProcess) -> None:
    url = f"{tobira.url}/oidc/authorize?client_id=wiki&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb%3Fx%3D1"
    answer = browser.client.get(url + "&response_type=code&scope=openid&state=a&state=b")
    assert query(answer.headers["location"])["error"] == "invalid_request"


# --- codes -----------------------------------------------------------------------------------------------


def spa_code(browser: Browser) -> tuple[str, str]:
    verifier, challenge = pkce()
    code = code_flow(browser, "spa", SPA_CB, code_challenge=challenge, code_challenge_method="S256")["code"]
    return code, verifier


def spa_form(code: str, verifier: str | None, **extra: str) -> dict[str, str]:
    form = {"grant_type": "authorization_code", "code": code, "client_id": "spa", "redirect_uri": SPA_CB}
    if verifier is not None:
        form["code_verifier"] = verifier
    return form | extra


def assert_oauth_error(answer: httpx.Response, error: str, status: int = 400) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert set(answer.json()) == {"error", "error_description"}
    assert answer.headers["cache-control"] == "no-store"


def test_a_replayed_code_fails_and_revokes_what_it_gave(browser: Browser, tobira: TobiraProcess) -> None:
    code, verifier = spa_code(browser)
    first = token_request(tobira.url, spa_form(code, verifier))
    assert first.status_code == 200
    bearer = {"Authorization": "Bearer " + first.json()["access_token"]}
    assert httpx.get(tobira.url + "/oidc/userinfo", headers=bearer).status_code == 200
    assert_oauth_error(token_request(tobira.url, spa_form(code, verifier)), "invalid_grant")
    assert httpx.get(tobira.url + "/oidc/userinfo", headers=bearer).status_code == 401


def test_a_code_swapped_between_clients_fails(browser: Browser, tobira: TobiraProcess) -> None:
    code, _ = spa_code(browser)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": SPA_CB}
    assert_oauth_error(token_request(tobira.url, form, auth=("wiki", SECRET)), "invalid_grant")
    # The code is spent by the failed attempt: its own client cannot use it afterwards either.
    wiki_code = code_flow(browser, "wiki", WIKI_CB)["code"]
    assert_oauth_error(token_request(tobira.url, spa_form(wiki_code, pkce()[0])), "invalid_grant")


CODE_TRICKS = {
    "wrong verifier": lambda code, verifier: spa_form(code, pkce()[0]),
    "no verifier": lambda code, verifier: spa_form(code, None),
    "verifier too short": lambda code, verifier: spa_form(code, "abc"),
    "the challenge as verifier": lambda code, verifier: spa_form(code, pkce()[1]),
    "other redirect_uri": lambda code, verifier: spa_form(code, verifier, redirect_uri=SPA_CB + "/"),
    "no redirect_uri": lambda code, verifier: {
        k: v for k, v in spa_form(code, verifier).items() if k != "redirect_uri"
    },
    "made-up code": lambda code, verifier: spa_form("x" + code[1:], verifier),
}


@pytest.mark.parametrize("name", CODE_TRICKS)
def test_a_code_with_the_wrong_proof_fails(browser: Browser, tobira: TobiraProcess, name: str) -> None:
    code, verifier = spa_code(browser)
    assert_oauth_error(token_request(tobira.url, CODE_TRICKS[name](code, verifier)), "invalid_grant")


def test_a_verifier_for_a_code_without_challenge_fails(browser: Browser, tobira: TobiraProcess) -> None:
    code = code_flow(browser, "wiki", WIKI_CB)["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": WIKI_CB,
        "code_verifier": pkce()[0],
    }
    assert_oauth_error(token_request(tobira.url, form, auth=("wiki", SECRET)), "invalid_grant")


CLIENT_TRICKS = {
    "wrong secret": ({}, ("wiki", SECRET + "x"), "invalid_client", 401),
    "unknown client": ({}, ("nobody", SECRET), "invalid_client", 401),
    "no authentication": ({"client_id": "wiki"}, None, "invalid_client", 401),
    "public client with a secret": (
        {"client_id": "spa", "client_secret": SECRET},
        None,
        "invalid_client",
        401,
    ),
    "basic and post at once": ({"client_secret": SECRET}, ("wiki", SECRET), "invalid_request", 400),
    "implicit grant type": ({"grant_type": "password"}, ("wiki", SECRET), "unsupported_grant_type", 400),
    "refresh grant": ({"grant_type": "refresh_token"}, ("wiki", SECRET), "unsupported_grant_type", 400),
}


@pytest.mark.parametrize("name", CLIENT_TRICKS)
def test_client_authentication_tricks(tobira: TobiraProcess, name: str) -> None:
    extra, auth, error, status = CLIENT_TRICKS[name]
    form = {"grant_type": "authorization_code", "code": "c" * 43, "redirect_uri": WIKI_CB, **extra}
    answer = token_request(tobira.url, form, auth=auth)
    assert_oauth_error(answer, error, status)
    if error == "invalid_client" and auth is not None:
        assert answer.headers["www-authenticate"].startswith("Basic")


def test_the_token_endpoint_takes_forms_only(tobira: TobiraProcess) -> None:
    answer = httpx.post(
        tobira.url + "/oidc/token", json={"grant_type": "authorization_code"}, auth=("wiki", SECRET)
    )
    assert_oauth_error(answer, "invalid_request")


# --- forged tokens offered back --------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, str], claims: dict[str, object], key: bytes = b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if not key:
        return signing_input + "."
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(signing_input.encode())
    return signing_input + "." + b64(mac.finalize())


@pytest.fixture(scope="module")
def forgeries(tobira: TobiraProcess) -> dict[str, str]:
    keys = KeySet.import_key_set(httpx.get(tobira.url + "/oidc/jwks").json())
    rsa = next(key for key in keys if isinstance(key, RSAKey))
    public_pem = rsa.as_pem(private=False)
    claims = {"iss": tobira.url, "sub": "someone", "aud": "wiki", "exp": 4_000_000_000, "iat": 1}
    return {
        "alg none": forged({"alg": "none", "typ": "JWT"}, claims),
        "alg None": forged({"alg": "None", "kid": rsa.kid}, claims),
        "HS256 with the public key": forged({"alg": "HS256", "kid": rsa.kid}, claims, public_pem),
        "HS256 with the JWK's n": forged(
            {"alg": "HS256", "kid": rsa.kid}, claims, rsa.as_dict()["n"].encode()
        ),
    }


@pytest.mark.parametrize(
    "name", ["alg none", "alg None", "HS256 with the public key", "HS256 with the JWK's n"]
)
def test_forged_tokens_are_refused_by_userinfo(
    tobira: TobiraProcess, forgeries: dict[str, str], name: str
) -> None:
    answer = httpx.get(tobira.url + "/oidc/userinfo", headers={"Authorization": "Bearer " + forgeries[name]})
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_token"
    assert answer.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.parametrize(
    "name", ["alg none", "alg None", "HS256 with the public key", "HS256 with the JWK's n"]
)
def test_forged_id_token_hints_sign_nobody_out(
    browser: Browser, tobira: TobiraProcess, forgeries: dict[str, str], name: str
) -> None:
    browser.sign_in()
    answer = browser.client.get(
        tobira.url + "/oidc/logout",
        params={"id_token_hint": forgeries[name], "post_logout_redirect_uri": RP + "/bye", "state": "s"},
    )
    assert answer.status_code == 400 and "location" not in answer.headers
    assert "OIDC_INVALID_LOGOUT" in answer.text
    assert browser.session().status_code == 200


def test_logout_to_an_unregistered_uri_is_refused(browser: Browser, tobira: TobiraProcess) -> None:
    answer = browser.client.get(
        tobira.url + "/oidc/logout",
        params={"client_id": "wiki", "post_logout_redirect_uri": "https://evil.example/"},
    )
    assert answer.status_code == 400 and "location" not in answer.headers


def test_logout_without_a_hint_asks_first(browser: Browser, tobira: TobiraProcess) -> None:
    browser.sign_in()
    params = {"client_id": "wiki", "post_logout_redirect_uri": RP + "/bye", "state": "s"}
    asked = browser.client.get(tobira.url + "/oidc/logout", params=params)
    assert asked.status_code == 200 and 'name="confirm"' in asked.text
    assert browser.session().status_code == 200
    # Another site cannot confirm for the person.
    cross = browser.client.post(
        tobira.url + "/oidc/logout",
        data={**params, "confirm": "yes"},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403 and browser.session().status_code == 200
    confirmed = browser.post_form("/oidc/logout", {**params, "confirm": "yes"})
    assert confirmed.status_code == 303 and confirmed.headers["location"] == RP + "/bye?state=s"
    assert browser.session().status_code == 401


def test_userinfo_without_a_token(tobira: TobiraProcess) -> None:
    for headers in ({}, {"Authorization": "Basic d2lraTp4"}, {"Authorization": "Bearer"}):
        answer = httpx.get(tobira.url + "/oidc/userinfo", headers=headers)
        assert answer.status_code in (400, 401)
        assert "error" in answer.json()


def test_the_page_forms_refuse_other_sites(browser: Browser, tobira: TobiraProcess) -> None:
    answer = authorize(browser, client_id="wiki", redirect_uri=WIKI_CB, response_type="code", scope="openid")
    authorization = query(answer.headers["location"])["authorization"]
    for path in ("/oidc/authorize/continue", "/oidc/authorize/login", "/oidc/authorize/cancel"):
        cross = browser.client.post(
            tobira.url + path,
            data={"authorization": authorization},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403, path
        assert "location" not in cross.headers


def test_browser_apps_may_ask_across_origins(tobira: TobiraProcess) -> None:
    for path in ("/oidc/token", "/oidc/userinfo"):
        answer = httpx.options(
            tobira.url + path,
            headers={
                "Origin": "https://spa.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert answer.status_code == 204
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "Authorization" in answer.headers["access-control-allow-headers"]
        assert "access-control-allow-credentials" not in answer.headers


def test_requests_kept_for_the_page_are_rate_limited(tmp_path: Path, standin: RunningStandin) -> None:
    server = start_tobira(
        tmp_path,
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_OIDC_CLIENTS=str(clients_file(tmp_path, RP)),
        TOBIRA_LOGIN_RATE_LIMIT="2",
    )
    try:
        params = {"client_id": "wiki", "redirect_uri": WIKI_CB, "response_type": "code", "scope": "openid"}
        answers = [httpx.get(server.url + "/oidc/authorize", params=params) for _ in range(3)]
        assert [answer.status_code for answer in answers] == [303, 303, 429]
        assert "retry-after" in answers[2].headers and "location" not in answers[2].headers
    finally:
        server.stop()
