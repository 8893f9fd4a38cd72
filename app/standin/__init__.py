"""A stand-in Misskey 2026.5.4 server for tobira's tests and `tobira demo`; production code never imports it.

A real HTTP server (Starlette under uvicorn, on loopback) that behaves as `shared/PROTOCOL.md` §1-2 describes,
so that code passing against it also works against a real server:

- `GET /.well-known/nodeinfo` (an empty 403 while `federation` is off), `GET /nodeinfo/2.0`, `/nodeinfo/2.1`;
- `POST /api/meta` with `features.miauth`; `POST /api/miauth/{session}/check`, one-shot;
- every one of the 434 endpoints with the real credential / permission / `secure` checks and error shapes,
  `i`, `notes/create`, `notes/timeline`, `drive/files/create` and `i/revoke-token` implemented (see `api`);
- `GET /avatar/{user_id}` and the server icon (a tiny PNG), `GET /files/{file_id}` (uploaded files).

The MiAuth consent pages, plain HTML forms that a browser or an HTTP client drives alike:

    GET  /miauth/{session}?name=&icon=&callback=&permission=
         step 1, choose an account: one submit button per account, `name="user" value="USERNAME"`, in a GET
         form that reopens this page with the same four parameters plus `user`. The four parameters are
         remembered for the session (`StandinState.consent_views`): Accept uses the last ones shown.
    GET  /miauth/{session}?…&user=USERNAME
         step 2, the consent: the app's name and icon, the permissions in words, the callback URL, and
    POST /miauth/{session}/accept   form field `user=USERNAME`
         stores the token for that account (unless the approval fails: name > 128, icon > 512, session > 128
         characters, a permission twice), then `303` to the callback with `session=SESSION` in its query;
         without a callback a page that says access was granted (or failed). A refused callback scheme
         (javascript:, file:, data:, mailto:, tel:, vbscript:) is a 400 page and nothing is stored.
         Without a consent page shown first for this session, a 400 page.
    POST /miauth/{session}/deny     no fields
         a page saying access was denied; no redirect, nothing stored.

With `StandinConfig(miauth=False)` it is an old server (`app.standin.legacy`): no MiAuth, but the legacy app
flow — `app/create`, `auth/session/generate`, the consent page `GET /auth/{token}` with Accept (one button per
account, `POST /auth/{token}/accept`, then `303` to `callbackUrl?token=TOKEN`) and Deny, and
`auth/session/userkey` once; the API key `sha256(accessToken + secret)` authenticates as the token.

With `StandinConfig(oauth2=True)` it also speaks OAuth 2.0 (`app.standin.oauth2`): the authorization server
metadata, `GET /oauth/authorize` (reads the client_id document for its redirect URIs), `POST /oauth/decision`
and `POST /oauth/token` (PKCE S256, single-use codes); the token works for the API like a MiAuth one.

`StandinState` (`app.state.standin`, `RunningStandin.state`) holds the consent views, tokens, notes, files,
per-session check counts (`check_count`) and every API call received (`calls`: endpoint, credential, headers,
body keys). `issue_token` lets a test skip the consent flow, `revoke` plays the person revoking an app in
Settings, `token_of` and `is_revoked` answer what tobira was given and what it revoked.

Switchable faults (`faults`): a test sets `state.faults[route] = Fault(FaultKind.…)` on a running stand-in
to make it a misbehaving instance — HTML or JSON of the wrong shape, a 10 MiB body, an endless or dripping
answer, a gzip bomb, huge headers, a redirect, a reset, a close after the headers, a lying Content-Length,
extra headers such as Set-Cookie, or no answer at all; `state.route_hits` counts every request per route and
`state.faults_in_progress` the faulted connections still open.

`run_standin_in_thread(config, host, port)` serves it, faults included, from a background thread (port 0: any
free port); `python -m app.standin --port 3000` serves it in the foreground.
"""

from app.standin.config import StandinConfig, StandinUser
from app.standin.faults import Fault, FaultKind
from app.standin.runner import RunningStandin, run_standin_in_thread
from app.standin.server import create_standin_app
from app.standin.state import AccessToken, ConsentView, RecordedCall, StandinState

__all__ = [
    "AccessToken",
    "ConsentView",
    "Fault",
    "FaultKind",
    "RecordedCall",
    "RunningStandin",
    "StandinConfig",
    "StandinState",
    "StandinUser",
    "create_standin_app",
    "run_standin_in_thread",
]
