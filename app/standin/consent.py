"""The stand-in's MiAuth consent screen: what Misskey's `miauth.vue` page decides, as plain HTML forms.

The rules are the real page's: only `name`, `icon`, `callback` and `permission` are read; `permission` is
split on "," and only exact known names survive (a name with a space is dropped silently); a callback whose
scheme is javascript:, file:, data:, mailto:, tel: or vbscript: is refused; Accept adds `session=SESSION` to
the callback's query (replacing any `session` there) and navigates to it. Like the real page, a failed
approval (a name over 128 characters, an icon URL over 512, a session id over 128 — the database columns —
or a permission listed twice) stores nothing but still sends the browser to the callback. The pages need no
JavaScript, so an HTTP client and a real browser drive them the same way.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from app.standin.catalog import permissions
from app.standin.config import StandinConfig, StandinUser
from app.standin.state import ConsentView

REFUSED_SCHEMES = frozenset({"javascript", "file", "data", "mailto", "tel", "vbscript"})
MAX_NAME = 128
MAX_ICON_URL = 512
MAX_SESSION = 128


def known_permissions(config: StandinConfig | None = None) -> frozenset[str]:
    """The permission names this server knows: misskey-js's, narrowed by `config.known_permissions`."""
    names = permissions()
    if config is None or config.known_permissions is None:
        return names
    return names & frozenset(config.known_permissions)


def requested_permissions(raw: str | None, config: StandinConfig | None = None) -> list[str]:
    """The permissions the consent page grants, in request order (duplicates kept, as the page does)."""
    if not raw:
        return []
    known = known_permissions(config)
    return [name for name in raw.split(",") if name in known]


def callback_with_session(callback: str, session: str) -> str:
    """The URL Accept navigates to; raises ValueError for a callback the page refuses."""
    parts = urlsplit(callback)
    if not parts.scheme:
        raise ValueError("the callback is not an absolute URL")
    if parts.scheme in REFUSED_SCHEMES:
        raise ValueError(f"{parts.scheme}: callbacks are refused")
    if parts.scheme in ("http", "https") and not parts.netloc:
        raise ValueError("the callback has no host")
    # URLSearchParams.set: the first `session` takes the value, later ones go, else it is appended.
    query: list[tuple[str, str]] = []
    placed = False
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "session":
            query.append((key, value))
        elif not placed:
            query.append((key, session))
            placed = True
    if not placed:
        query.append(("session", session))
    return urlunsplit(parts._replace(query=urlencode(query)))


def approval_problem(view: ConsentView, config: StandinConfig | None = None) -> str | None:
    """Why `miauth/gen-token` would fail for this request, or None when it succeeds."""
    if view.name is not None and len(view.name) > MAX_NAME:
        return f"the app name is longer than {MAX_NAME} characters"
    if view.icon is not None and len(view.icon) > MAX_ICON_URL:
        return f"the icon URL is longer than {MAX_ICON_URL} characters"
    if len(view.session) > MAX_SESSION:
        return f"the session id is longer than {MAX_SESSION} characters"
    granted = requested_permissions(view.permission, config)
    if len(set(granted)) != len(granted):
        return "a permission is listed twice"
    return None


def callback_problem(view: ConsentView) -> str | None:
    """Why the page refuses this request's callback, or None."""
    if not view.callback:
        return None
    try:
        callback_with_session(view.callback, view.session)
    except ValueError as exc:
        return str(exc)
    return None


def describe_permission(name: str) -> str:
    """'write:admin:delete-account' → 'Write admin: delete account'."""
    verb, _, rest = name.partition(":")
    return f"{verb.capitalize()} {rest.replace(':', ': ').replace('-', ' ')}"


def permission_items(names: list[str] | tuple[str, ...]) -> str:
    """The permissions as list items, in words with the name beside."""
    return "".join(f"<li>{_e(describe_permission(p))} <code>{_e(p)}</code></li>" for p in names)


def accept_buttons(users: list[StandinUser]) -> str:
    """One "Accept as @name" submit button per account (field `user`), for the legacy and OAuth pages."""
    return "".join(
        f'<li><button type="submit" class="accept" name="user" value="{_e(user.username)}">'
        f"Accept as @{_e(user.username)}</button></li>"
        for user in users
    )


def account_page(config: StandinConfig, view: ConsentView, users: list[StandinUser]) -> str:
    """Step one: choose the account (a GET form re-opening this page with `user=USERNAME`)."""
    problem = callback_problem(view)
    if problem:
        return _refused_page(config, view, problem)
    hidden = "".join(
        f'<input type="hidden" name="{key}" value="{_e(value)}">'
        for key, value in (
            ("name", view.name),
            ("icon", view.icon),
            ("callback", view.callback),
            ("permission", view.permission),
        )
        if value is not None
    )
    buttons = "".join(
        f'<li><button type="submit" name="user" value="{_e(user.username)}">'
        f"{_e(user.name or user.username)} <small>@{_e(user.username)}</small></button></li>"
        for user in users
    )
    body = (
        f"<h1>{_e(_app_name(view))} wants to use your account</h1>"
        "<p>Choose the account to continue with.</p>"
        f'<form method="get" action="{_consent_path(view.session)}">'
        f'{hidden}<ul class="accounts">{buttons}</ul></form>'
    )
    return _page(config, "Choose an account", body)


def consent_page(config: StandinConfig, view: ConsentView, user: StandinUser) -> str:
    """Step two: the app, its permissions in words, the callback URL, and Accept / Deny."""
    problem = callback_problem(view)
    if problem:
        return _refused_page(config, view, problem)
    granted = requested_permissions(view.permission, config)
    icon = f'<img class="icon" src="{_e(view.icon)}" alt="" width="64" height="64">' if view.icon else ""
    rights = (
        '<ul class="permissions">' + permission_items(granted) + "</ul>"
        if granted
        else "<p>No permissions: the app only learns who you are.</p>"
    )
    redirect = (
        f'<p>By accepting you will be sent to:</p><p><code class="callback">{_e(view.callback)}</code></p>'
        if view.callback
        else ""
    )
    base = _consent_path(view.session)
    body = (
        f"{icon}<h1>Allow {_e(_app_name(view))} to use your account?</h1>"
        f"<p>Signed in as <strong>@{_e(user.username)}</strong>.</p>"
        f"<h2>It will be able to</h2>{rights}{redirect}"
        f'<form method="post" action="{base}/accept">'
        f'<input type="hidden" name="user" value="{_e(user.username)}">'
        '<button type="submit" class="accept">Accept</button></form>'
        f'<form method="post" action="{base}/deny"><button type="submit" class="deny">Deny</button></form>'
    )
    return _page(config, "Allow access?", body)


def notice_page(config: StandinConfig, title: str, message: str) -> str:
    """The end of the flow without a redirect: success, denial, failure."""
    return _page(config, title, f"<h1>{_e(title)}</h1><p>{_e(message)}</p>")


def _refused_page(config: StandinConfig, view: ConsentView, problem: str) -> str:
    return _page(
        config,
        "Invalid callback",
        f'<h1>Invalid callback</h1><p class="error">This app cannot be authorised: {_e(problem)}.</p>'
        f"<p><code>{_e(view.callback or '')}</code></p>",
    )


def _app_name(view: ConsentView) -> str:
    return view.name or "An application"


def _consent_path(session: str) -> str:
    return "/miauth/" + _e(quote(session, safe=""))


def _e(text: str | None) -> str:
    return html.escape(text or "", quote=True)


def _page(config: StandinConfig, title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · {_e(config.name)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}"
        "ul{padding:0;list-style:none}li{margin:.4rem 0}"
        "button{font:inherit;padding:.5rem 1rem;cursor:pointer}"
        ".accept{background:#86b300;color:#fff;border:0}.error{color:#b00020}"
        "form{display:inline-block;margin:.3rem}"
        "code{word-break:break-all}</style></head>"
        f"<body><p><small>{_e(config.name)} — MiAuth</small></p>{body}</body></html>"
    )
