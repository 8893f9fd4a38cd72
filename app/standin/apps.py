"""The stand-in's "Settings › Apps": the page tobira's signed-out page sends people to when a server will
not let an app token revoke itself. It lists the app tokens still valid, with a Revoke button each.

The stand-in has no sign-in of its own, so the page shows every account's apps, each under its account.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.standin.consent import _e, _page
from app.standin.state import StandinState

PATH = "/settings/apps"


async def apps_page(request: Request) -> Response:
    state: StandinState = request.app.state.standin
    live = [token for token in state.tokens.values() if not token.revoked]
    items = "".join(
        f"<li><strong>{_e(token.name or 'An application')}</strong> — @{_e(token.user.username)}"
        f'<form method="post" action="{PATH}/{_e(token.id)}/revoke">'
        '<button type="submit">Revoke</button></form></li>'
        for token in live
    )
    body = "<h1>Apps</h1>" + (f"<ul>{items}</ul>" if live else "<p>No app has access to an account.</p>")
    return HTMLResponse(_page(state.config, "Settings › Apps", body))


async def revoke(request: Request) -> Response:
    """Revoke one token by its id, then show the list again."""
    state: StandinState = request.app.state.standin
    found = next((t for t in state.tokens.values() if t.id == request.path_params["token_id"]), None)
    if found is not None:
        state.revoke(found.token)
    return RedirectResponse(PATH, 303)
