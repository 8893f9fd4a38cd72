"""tobira as an OpenID Connect provider, end to end: tobira and the stand-in as real servers, Authlib's
client as the relying party, and a browser-like client walking tobira's page and the consent screen."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from app.standin import RunningStandin
from tests.conftest import STANDIN_HOST, Browser, TobiraProcess, start_tobira
from tests.oidc_support import (
    APP_SECRET,
    SECRET,
    RunningApp,
    authorize,
    clients_file,
    code_flow,
    pkce,
    query,
    relying_party,
    reserve_rp,
    serve_in_thread,
    sign_in_on_page,
    to_page,
    token_request,
)

SPA_CB = "http://127.0.0.1:9/spa/cb"
NOTES_CB = "http://127.0.0.1:9/notes/cb"
WIKI_CB2 = "http://127.0.0.1:9/cb?x=1"


@pytest.fixture(scope="module")
def rp() -> RunningApp:
    return reserve_rp()


@pytest.fixture(scope="module")
def tobira(
    tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin, rp: RunningApp
) -> Iterator[TobiraProcess]:
    folder = tmp_path_factory.mktemp("tobira-oidc")
    server = start_tobira(
        folder,
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_OIDC_CLIENTS=str(clients_file(folder, rp.url)),
    )
    with serve_in_thread(relying_party(server.url, rp.url), rp.port):
        yield server
    server.stop()


def jwks(tobira: TobiraProcess) -> KeySet:
    return KeySet.import_key_set(httpx.get(tobira.url + "/oidc/jwks").json())


def decode(tobira: TobiraProcess, token: str) -> dict[str, object]:
    return dict(jwt.decode(token, jwks(tobira), algorithms=["RS256", "ES256"]).claims)


# --- discovery and keys ----------------------------------------------------------------------------------


def test_discovery_names_every_endpoint(tobira: TobiraProcess) -> None:
    answer = httpx.get(tobira.url + "/.well-known/openid-configuration")
    assert answer.status_code == 200
    document = answer.json()
    issuer = tobira.url
    assert document["issuer"] == issuer
    assert document["authorization_endpoint"] == issuer + "/oidc/authorize"
    assert document["token_endpoint"] == issuer + "/oidc/token"
    assert document["userinfo_endpoint"] == issuer + "/oidc/userinfo"
    assert document["jwks_uri"] == issuer + "/oidc/jwks"
    assert document["end_session_endpoint"] == issuer + "/oidc/logout"
    assert document["response_types_supported"] == ["code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256", "ES256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert set(document["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }


def test_jwks_publishes_public_keys_only(tobira: TobiraProcess) -> None:
    keys = httpx.get(tobira.url + "/oidc/jwks").json()["keys"]
    assert {key["alg"] for key in keys} == {"RS256", "ES256"}
    for key in keys:
        assert key["use"] == "sig" and key["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_no_provider_without_a_clients_file(tmp_path: Path, standin: RunningStandin) -> None:
    server = start_tobira(tmp_path, TOBIRA_DEV_INSTANCES=standin.url)
    try:
        assert httpx.get(server.url + "/.well-known/openid-configuration").status_code == 404
        assert httpx.get(server.url + "/oidc/jwks").status_code == 404
    finally:
        server.stop()


# --- the relying party: Authlib ---------------------------------------------------------------------------


def test_authlib_signs_in_validates_the_id_token_and_logs_out(
    browser: Browser, rp: RunningApp, tobira: TobiraProcess
) -> None:
    started = browser.client.get(rp.url + "/login")
    assert started.status_code == 302
    authorization, page = to_page(browser, browser.client.get(started.headers["location"]))
    assert "Team wiki" in page and rp.url in page  # the app's name and origin

    back = sign_in_on_page(browser, authorization)
    assert back.status_code == 303
    location = back.headers["location"]
    assert location.startswith(rp.url + "/callback?")
    assert query(location)["iss"] == tobira.url  # RFC 9207

    answer = browser.client.get(location)  # Authlib exchanges the code, checks the ID token and nonce
    assert answer.status_code == 200, answer.text
    claims = answer.json()["id_token_claims"]
    host = f"{STANDIN_HOST}:{browser.standin.port}"
    assert claims["iss"] == tobira.url and claims["aud"] == "wiki"
    assert claims["preferred_username"] == f"alice@{host}"
    assert claims["misskey_host"] == host and claims["misskey_user_id"]
    assert claims["profile"] == f"{browser.standin.url}/@alice"
    assert claims["nonce"] and claims["auth_time"] <= claims["iat"]
    assert answer.json()["userinfo"]["sub"] == claims["sub"]
    assert browser.session().status_code == 200  # the sign-in is tobira's session too

    # Agreed once: the next sign-in to the same app goes straight back with a code.
    again = browser.client.get(browser.client.get(rp.url + "/login").headers["location"])
    assert again.status_code == 303
    assert again.headers["location"].startswith(rp.url + "/callback?code=")
    second = browser.client.get(again.headers["location"]).json()["id_token_claims"]
    assert second["sub"] == claims["sub"]

    logout = browser.client.get(browser.client.get(rp.url + "/logout").headers["location"])
    assert logout.status_code == 303
    assert logout.headers["location"] == rp.url + "/bye?state=bye-state"
    assert browser.session().status_code == 401


def test_sub_is_the_same_for_every_app_and_stable(browser: Browser, tobira: TobiraProcess) -> None:
    verifier, challenge = pkce()
    code = code_flow(browser, "spa", SPA_CB, code_challenge=challenge, code_challenge_method="S256")["code"]
    spa = token_request(
        tobira.url,
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": "spa",
            "redirect_uri": SPA_CB,
            "code_verifier": verifier,
        },
    )
    assert spa.status_code == 200, spa.text
    assert spa.headers["cache-control"] == "no-store"
    first = decode(tobira, spa.json()["id_token"])
    code = code_flow(browser, "wiki", WIKI_CB2, prompt="login")["code"]
    wiki = token_request(
        tobira.url,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": WIKI_CB2},
        auth=("wiki", SECRET),
    )
    assert wiki.status_code == 200, wiki.text
    second = decode(tobira, wiki.json()["id_token"])
    assert first["sub"] == second["sub"]
    assert first["aud"] == "spa" and second["aud"] == "wiki"


def test_client_secret_post_works_and_the_registered_query_is_kept(
    browser: Browser, tobira: TobiraProcess
) -> None:
    answer = code_flow(browser, "wiki", WIKI_CB2)
    assert answer["x"] == "1"
    token = token_request(
        tobira.url,
        {
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": WIKI_CB2,
            "client_id": "wiki",
            "client_secret": SECRET,
        },
    )
    assert token.status_code == 200, token.text
    info = httpx.get(
        tobira.url + "/oidc/userinfo", headers={"Authorization": "Bearer " + token.json()["access_token"]}
    )
    assert info.status_code == 200 and info.json()["preferred_username"].startswith("alice@")


# --- an app with Misskey permissions --------------------------------------------------------------------


def test_an_app_with_permissions_gets_a_token_named_for_it(browser: Browser, tobira: TobiraProcess) -> None:
    browser.sign_in()  # signed in to tobira already: the app still gets a sign-in of its own
    before = browser.session().json()
    authorization, page = to_page(
        browser,
        authorize(
            browser,
            client_id="notes",
            redirect_uri=NOTES_CB,
            response_type="code",
            scope="openid",
            state="s1",
            nonce="n-1",
        ),
    )
    assert "Notes Helper" in page and "Continue as @alice@" in page
    started = browser.post_form("/oidc/authorize/continue", {"authorization": authorization})
    assert started.status_code == 303
    consent = started.headers["location"]
    consent_query = query(consent)
    assert consent_query["name"] == "Notes Helper"  # the person's server names the app, not tobira
    assert consent_query["permission"] == "read:account,write:notes"
    assert consent_query["icon"] == "https://notes.example/logo.png"
    back = browser.callback(browser.approve(consent, "alice"))
    assert back.status_code == 303 and back.headers["location"].startswith(NOTES_CB)
    code = query(back.headers["location"])["code"]
    token = token_request(
        tobira.url,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": NOTES_CB},
        auth=("notes", APP_SECRET),
    )
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["misskey_host"] == f"{STANDIN_HOST}:{browser.standin.port}"
    header = json.loads(base64.urlsafe_b64decode(body["id_token"].split(".")[0] + "=="))
    assert header["alg"] == "ES256"
    assert decode(tobira, body["id_token"])["nonce"] == "n-1"
    me = httpx.post(browser.standin.url + "/api/i", json={"i": body["misskey_access_token"]})
    assert me.status_code == 200 and me.json()["username"] == "alice"
    assert browser.session().json() == before  # tobira's own session is untouched


def test_an_identity_only_app_gets_no_misskey_token(browser: Browser, tobira: TobiraProcess) -> None:
    verifier, challenge = pkce()
    code = code_flow(browser, "spa", SPA_CB, code_challenge=challenge, code_challenge_method="S256")["code"]
    body = token_request(
        tobira.url,
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": "spa",
            "redirect_uri": SPA_CB,
            "code_verifier": verifier,
        },
    ).json()
    assert "misskey_access_token" not in body and "misskey_host" not in body


# --- prompt, max_age, login_hint, consent ----------------------------------------------------------------


def test_prompt_none(browser: Browser, tobira: TobiraProcess) -> None:
    params = {
        "client_id": "wiki",
        "redirect_uri": WIKI_CB2,
        "response_type": "code",
        "scope": "openid",
        "state": "pn",
        "prompt": "none",
    }
    signed_out = authorize(browser, **params)
    assert signed_out.status_code == 303
    answer = query(signed_out.headers["location"])
    assert answer == {
        "x": "1",
        "error": "login_required",
        "error_description": answer["error_description"],
        "state": "pn",
        "iss": tobira.url,
    }
    browser.sign_in("bob")  # bob has agreed to no app here
    not_agreed = query(authorize(browser, **params).headers["location"])
    assert not_agreed["error"] == "consent_required"


def test_max_age_and_prompt_login_ask_again(browser: Browser, tobira: TobiraProcess) -> None:
    code_flow(browser, "wiki", WIKI_CB2)  # signed in and agreed
    base = {"client_id": "wiki", "redirect_uri": WIKI_CB2, "response_type": "code", "scope": "openid"}
    assert authorize(browser, **base).headers["location"].startswith(WIKI_CB2)
    for extra in ({"max_age": "0"}, {"prompt": "login"}, {"prompt": "consent"}):
        assert authorize(browser, **base, **extra).headers["location"].startswith("/oidc/authorize/page")


def test_login_hint_fills_in_the_server(browser: Browser, tobira: TobiraProcess) -> None:
    host = f"{STANDIN_HOST}:{browser.standin.port}"
    _, page = to_page(
        browser,
        authorize(
            browser,
            client_id="wiki",
            redirect_uri=WIKI_CB2,
            response_type="code",
            scope="openid",
            login_hint=f"@bob@{host}",
        ),
    )
    assert f'value="{host}"' in page


def test_consent_is_withdrawn_on_tobiras_page(browser: Browser, tobira: TobiraProcess) -> None:
    code_flow(browser, "wiki", WIKI_CB2)
    home = browser.client.get(tobira.url + "/")
    assert "Team wiki" in home.text
    withdrawn = browser.post_form("/oidc/consents/withdraw", {"client_id": "wiki"})
    assert withdrawn.status_code == 303
    assert "Team wiki" not in browser.client.get(tobira.url + "/").text
    again = authorize(browser, client_id="wiki", redirect_uri=WIKI_CB2, response_type="code", scope="openid")
    assert again.headers["location"].startswith("/oidc/authorize/page")


def test_cancel_tells_the_app_access_denied(browser: Browser, tobira: TobiraProcess) -> None:
    authorization, _ = to_page(
        browser,
        authorize(
            browser, client_id="wiki", redirect_uri=WIKI_CB2, response_type="code", scope="openid", state="c"
        ),
    )
    answer = browser.post_form("/oidc/authorize/cancel", {"authorization": authorization})
    assert query(answer.headers["location"])["error"] == "access_denied"
    assert query(answer.headers["location"])["state"] == "c"


def test_the_page_lets_its_form_go_back_to_the_app_only(browser: Browser, tobira: TobiraProcess) -> None:
    answer = authorize(browser, client_id="wiki", redirect_uri=WIKI_CB2, response_type="code", scope="openid")
    page = browser.client.get(tobira.url + answer.headers["location"])
    policy = page.headers["content-security-policy"]
    assert "form-action 'self' https: " in policy and policy.count("http://127.0.0.1:9") == 1
    assert len(page.headers.get_list("content-security-policy")) == 1


def test_the_page_names_the_app_in_every_language(browser: Browser, tobira: TobiraProcess) -> None:
    answer = authorize(browser, client_id="wiki", redirect_uri=WIKI_CB2, response_type="code", scope="openid")
    expected = {
        "ja": "Team wiki にログイン",
        "fr": "Se connecter à Team wiki",
        "ko": "Team wiki에 로그인",
        "zh-Hant": "登入 Team wiki",
        "zh-Hans": "登录 Team wiki",
    }
    for tag, title in expected.items():
        page = browser.client.get(tobira.url + answer.headers["location"] + "&lang=" + tag)
        assert title in page.text, tag
    link = urlsplit(answer.headers["location"])
    assert f'href="{link.path}?{link.query}&amp;lang=ja"' in page.text


def test_the_apps_ui_locales_choose_the_pages_language(browser: Browser, tobira: TobiraProcess) -> None:
    answer = authorize(
        browser,
        client_id="wiki",
        redirect_uri=WIKI_CB2,
        response_type="code",
        scope="openid",
        ui_locales="de fr-CA ja",
    )
    assert answer.headers["location"].endswith("&lang=fr")
    page = browser.client.get(tobira.url + answer.headers["location"])
    assert "Se connecter à Team wiki" in page.text


def test_authorize_takes_a_form_post_too(browser: Browser, tobira: TobiraProcess) -> None:
    form = {
        "client_id": "wiki",
        "redirect_uri": WIKI_CB2,
        "response_type": "code",
        "scope": "openid",
        "state": "p",
    }
    answer = browser.client.post(
        tobira.url + "/oidc/authorize", data=form, headers={"Origin": "http://127.0.0.1:9"}
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/oidc/authorize/page?authorization=")
    bad = browser.client.post(tobira.url + "/oidc/authorize", data={**form, "response_type": "token"})
    assert query(bad.headers["location"])["error"] == "unsupported_response_type"
