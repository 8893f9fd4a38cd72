"""The six languages: every message in every catalogue, the language each request gets, translated pages
and error messages. The app runs in-process; nothing here reaches an instance."""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from hypothesis import given
from hypothesis import strategies as st

from app import i18n
from app.catalogues import ROOT, catalogue_path, extract
from app.config import load_settings
from app.errors import ErrorCode, InstanceTimeout, TobiraError
from app.main import create_app

TRANSLATED = [language for language in i18n.LANGUAGES if language.tag != i18n.SOURCE]
KEY = "k" * 32
PLACEHOLDER = re.compile(r"%\([a-z_]+\)s")
TAG = re.compile(r"</?[a-z]+")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def template() -> Catalog:
    return extract()


def read_catalogue(locale: str) -> Catalog:
    with catalogue_path(locale).open("rb") as source:
        return read_po(source, locale=locale)


def used_ids(template: Catalog) -> set[str]:
    return {message.id for message in template if message.id and isinstance(message.id, str)}


# --- catalogues -----------------------------------------------------------------------------------------


def test_extraction_finds_pages_python_and_errors(template: Catalog) -> None:
    ids = used_ids(template)
    assert "Continue to your server" in ids  # a template's _()
    assert "%(app)s asks for permission to:" in ids  # a template's {% trans %}
    assert "Post and delete notes" in ids  # N_() in app/i18n.py
    assert set(i18n.ERROR_MESSAGES.values()) <= ids
    assert len(ids) > 140


@pytest.mark.parametrize("language", TRANSLATED, ids=lambda language: language.tag)
def test_every_message_is_translated_in_every_catalogue(template: Catalog, language: i18n.Language) -> None:
    catalogue = read_catalogue(language.locale)
    missing = sorted(
        message_id
        for message_id in used_ids(template)
        if message_id not in catalogue or not catalogue[message_id].string
    )
    fuzzy = sorted(str(message.id) for message in catalogue if message.id and message.fuzzy)
    assert missing == [], f"untranslated in {language.locale}: run `python -m app.catalogues`, then translate"
    assert fuzzy == [], f"fuzzy (unchecked) entries in {language.locale}"


@pytest.mark.parametrize("language", TRANSLATED, ids=lambda language: language.tag)
def test_catalogues_keep_nothing_unused(template: Catalog, language: i18n.Language) -> None:
    catalogue = read_catalogue(language.locale)
    unused = sorted(str(m.id) for m in catalogue if m.id and m.id not in used_ids(template))
    assert unused == []
    assert not catalogue.obsolete


@pytest.mark.parametrize("language", TRANSLATED, ids=lambda language: language.tag)
def test_translations_keep_placeholders_and_markup(language: i18n.Language) -> None:
    for message in read_catalogue(language.locale):
        if not message.id:
            continue
        source, translated = str(message.id), str(message.string)
        assert sorted(PLACEHOLDER.findall(source)) == sorted(PLACEHOLDER.findall(translated)), source
        assert sorted(TAG.findall(source)) == sorted(TAG.findall(translated)), source


@pytest.mark.parametrize("language", TRANSLATED, ids=lambda language: language.tag)
def test_catalogues_compile(language: i18n.Language) -> None:
    compiled = i18n.compile_catalogue(catalogue_path(language.locale), language.locale)
    assert compiled.gettext("Sign in with Misskey") != "Sign in with Misskey"
    assert compiled.gettext("not a message") == "not a message"


# --- every error and permission has words ----------------------------------------------------------------


def test_every_error_code_has_a_message() -> None:
    assert set(i18n.ERROR_MESSAGES) == set(ErrorCode)


def all_error_classes(base: type[TobiraError] = TobiraError) -> list[type[TobiraError]]:
    classes = [base]
    for sub in base.__subclasses__():
        classes += all_error_classes(sub)
    return classes


def test_every_default_error_message_is_known() -> None:
    unknown = [cls.__name__ for cls in all_error_classes() if cls.default_message not in i18n.KNOWN_MESSAGES]
    assert unknown == []


# The modules whose errors reach pages. The proxy's errors are JSON only (English by design).
PAGE_MODULES = [
    "app.hosts",
    "app.routes.signin",
    "app.routes.account",
    "app.routes.pages",
    "app.signin.flow",
    "app.discovery",
    "app.guard",
    "app.web",
]
ERROR_NAMES = {cls.__name__ for cls in all_error_classes()}


def raised_messages(module: ModuleType) -> list[str]:
    """Every literal message (or module constant) a module passes to an error class."""
    source = Path(module.__file__ or "").read_text()
    messages = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
            continue
        if node.func.id not in ERROR_NAMES or node.func.id == "RateLimited":
            continue
        argument = node.args[0]
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            messages.append(argument.value)
        elif isinstance(argument, ast.Name) and isinstance(getattr(module, argument.id, None), str):
            messages.append(getattr(module, argument.id))
    return messages


@pytest.mark.parametrize("name", PAGE_MODULES)
def test_every_message_a_page_can_show_is_translated(name: str) -> None:
    messages = raised_messages(importlib.import_module(name))
    assert [message for message in messages if message not in i18n.KNOWN_MESSAGES] == []


def test_the_host_parser_is_covered() -> None:
    assert len(raised_messages(importlib.import_module("app.hosts"))) >= 15


def test_every_permission_has_plain_words() -> None:
    names = json.loads((ROOT / "app" / "data" / "permissions.json").read_text())
    ordinary = [name for name in names if ":admin:" not in name]
    assert sorted(set(ordinary) - set(i18n.PERMISSIONS)) == []
    assert sorted(set(i18n.PERMISSIONS) - set(names)) == []
    assert i18n.permission_words("read:admin:meta") == i18n.ADMIN_READ
    assert i18n.permission_words("write:admin:send-email") == i18n.ADMIN_WRITE


def test_an_unknown_message_gets_its_codes_words() -> None:
    error = InstanceTimeout("Some detail nobody translated.")
    assert (
        i18n.localizer("ja").error_message(error)
        == "サーバーの応答に時間がかかりすぎました。しばらくしてからもう一度お試しください。"
    )
    assert i18n.localizer("en").error_message(error) == "The server took too long to answer. Try again later."


# --- choosing the language -------------------------------------------------------------------------------

ACCEPT_LANGUAGE = [
    ("ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7", "ja"),
    ("en-US,en;q=0.9", "en"),
    ("fr-CA,fr;q=0.9", "fr"),
    ("ko-KR,ko;q=0.9,en-US;q=0.8", "ko"),
    ("zh-TW,zh;q=0.9", "zh-Hant"),
    ("zh-HK", "zh-Hant"),
    ("zh-Hant-TW", "zh-Hant"),
    ("zh-MO", "zh-Hant"),
    ("zh-Hant", "zh-Hant"),
    ("zh-CN,zh;q=0.9", "zh-Hans"),
    ("zh-SG", "zh-Hans"),
    ("zh-Hans", "zh-Hans"),
    ("zh-Hans-HK", "zh-Hans"),
    ("zh_CN", "zh-Hans"),
    ("zh", "zh-Hans"),
    ("zh_TW", "zh-Hant"),
    ("en;q=0.5, zh-TW;q=0.8, zh-CN;q=0.9", "zh-Hans"),
    ("de-DE,de;q=0.9,fr;q=0.5", "fr"),
    ("en;q=0.1, ja;q=0.9", "ja"),
    ("ja;q=0, fr", "fr"),
    ("ja;q=0.5, ko;q=0.5", "ja"),
    ("FR-fr", "fr"),
    ("ja;q=abc, ko", "ko"),
    ("ja;q=2, ko", "ko"),
    ("de-DE", None),
    ("*", None),
    ("", None),
    (" , ;q=1", None),
]


@pytest.mark.parametrize(
    ("header", "expected"), ACCEPT_LANGUAGE, ids=[repr(header) for header, _ in ACCEPT_LANGUAGE]
)
def test_accept_language(header: str, expected: str | None) -> None:
    assert i18n.from_accept_language(header) == expected


@given(st.text(max_size=2000))
def test_accept_language_never_fails(header: str) -> None:
    assert i18n.from_accept_language(header) in {None, *i18n.BY_TAG}


@pytest.mark.parametrize(
    ("query", "cookie", "accept", "expected"),
    [
        ("fr", "ko", "ja", "fr"),
        (None, "ko", "ja", "ko"),
        ("xx", "ko", "ja", "ko"),
        (None, "zh-Hant", None, "zh-Hant"),
        ("zh-Hans", "zh-Hant", "zh-TW", "zh-Hans"),
        (None, "nonsense", "ja", "ja"),
        (None, None, "ja-JP", "ja"),
        (None, None, "de", "en"),
        (None, None, None, "en"),
    ],
    ids=[
        "query",
        "cookie",
        "bad-query",
        "cookie-zh",
        "query-zh",
        "bad-cookie",
        "header",
        "unknown",
        "nothing",
    ],
)
def test_precedence(query: str | None, cookie: str | None, accept: str | None, expected: str) -> None:
    assert i18n.choose_language(query, cookie, accept) == expected


# --- pages -----------------------------------------------------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        secret_keys=[KEY],
        data_dir=tmp_path,
        permissions=["read:account", "write:notes"],
        instances_deny=["misskey.io"],
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            yield client


def html_lang(page: str) -> str:
    match = re.search(r'<html lang="([^"]+)">', page)
    assert match is not None
    return match[1]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("accept", "tag", "heading"),
    [
        ("ja-JP", "ja", "Misskey でログイン"),
        ("en-GB", "en", "Sign in with Misskey"),
        ("fr-FR", "fr", "Se connecter avec Misskey"),
        ("ko-KR", "ko", "Misskey로 로그인"),
        ("zh-TW", "zh-Hant", "使用 Misskey 登入"),
        ("zh-CN", "zh-Hans", "使用 Misskey 登录"),
    ],
    ids=["ja", "en", "fr", "ko", "zh-Hant", "zh-Hans"],
)
async def test_login_form_in_each_language(
    client: httpx.AsyncClient, accept: str, tag: str, heading: str
) -> None:
    answer = await client.get("/login", headers={"Accept-Language": accept})
    assert answer.status_code == 200
    assert html_lang(answer.text) == tag
    assert answer.headers["content-language"] == tag
    assert f"<h1>{heading}</h1>" in answer.text
    assert '<form method="post" action="/login"' in answer.text
    assert "set-cookie" not in answer.headers


@pytest.mark.anyio
async def test_lang_switch_sets_the_cookie_and_the_cookie_is_used(client: httpx.AsyncClient) -> None:
    answer = await client.get("/login?lang=ko", headers={"Accept-Language": "ja"})
    assert html_lang(answer.text) == "ko"
    assert answer.headers["set-cookie"] == (
        "tobira-lang=ko; HttpOnly; Max-Age=31536000; Path=/; SameSite=lax"
    )
    again = await client.get("/", headers={"Accept-Language": "ja"})
    assert html_lang(again.text) == "ko"


@pytest.mark.anyio
async def test_an_unknown_lang_is_ignored(client: httpx.AsyncClient) -> None:
    answer = await client.get("/login?lang=xx", headers={"Accept-Language": "fr"})
    assert html_lang(answer.text) == "fr"
    assert "set-cookie" not in answer.headers


@pytest.mark.anyio
async def test_switch_links_keep_return_to_and_drop_the_rest(client: httpx.AsyncClient) -> None:
    answer = await client.get("/login?return_to=/app&lang=fr&foo=bar")
    assert '<a href="/login?return_to=%2Fapp&amp;lang=ja" lang="ja" hreflang="ja">日本語</a>' in answer.text
    assert (
        'href="/login?return_to=%2Fapp&amp;lang=fr" lang="fr" hreflang="fr" aria-current="true"'
        in answer.text
    )


@pytest.mark.anyio
async def test_switch_links_on_a_callback_error_never_repeat_the_callback(client: httpx.AsyncClient) -> None:
    answer = await client.get("/callback?session=x")
    assert "/callback" not in answer.text
    assert 'href="/login?lang=ja"' in answer.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("request_args", "status", "code", "words"),
    [
        (("GET", "/callback?session=x"), 400, "INVALID_CALLBACK", "ログインのリンクが不完全です。"),
        (
            ("GET", "/callback?session=8f7d3a52-8a4f-4f57-9f6c-2a5c0f0e8d1e"),
            400,
            "NO_SIGN_IN_PENDING",
            "このログインは期限切れです",
        ),
        (
            ("POST", "/login"),
            400,
            "INVALID_INSTANCE",
            "お使いのサーバーを入力してください（例：misskey.io）。",
        ),
        (("GET", "/login?instance=127.0.0.1"), 400, "INVALID_INSTANCE", "IP アドレスではなく"),
        (("GET", "/login?instance=misskey.io"), 403, "INSTANCE_NOT_ALLOWED", "このサーバーでのログインは"),
        (("GET", "/nowhere"), 404, "NOT_FOUND", "ページが見つかりません"),
    ],
    ids=["callback", "expired", "empty", "ip-address", "denied", "404"],
)
async def test_error_pages_in_japanese(
    client: httpx.AsyncClient, request_args: tuple[str, str], status: int, code: str, words: str
) -> None:
    method, path = request_args
    data = {"instance": ""} if method == "POST" else None
    # A post comes from tobira's own form, with its Origin.
    headers = {"Accept-Language": "ja", **({"Origin": "http://127.0.0.1:8000"} if data else {})}
    answer = await client.request(method, path, headers=headers, data=data)
    assert answer.status_code == status
    assert html_lang(answer.text) == "ja"
    assert words in answer.text
    assert f"<code>{code}</code>" in answer.text


@pytest.mark.anyio
async def test_the_lookup_speaks_the_pages_language(client: httpx.AsyncClient) -> None:
    answer = await client.get("/lookup?instance=localhost", headers={"Accept-Language": "fr"})
    assert answer.status_code == 400
    assert answer.json() == {
        "error": {
            "code": "INVALID_INSTANCE",
            "message": "Ce nom est réservé à un usage local ou particulier\u00a0; "
            "ce n’est pas un serveur public.",
            "id": ErrorCode.INVALID_INSTANCE.id,
        }
    }


@pytest.mark.anyio
async def test_json_api_errors_stay_english(client: httpx.AsyncClient) -> None:
    answer = await client.get("/session", headers={"Accept-Language": "ja"})
    assert answer.status_code == 401
    assert answer.json()["error"]["message"] == "You are not signed in."
