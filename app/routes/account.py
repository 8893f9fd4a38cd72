"""The signed-in person's routes: `GET /session` and `POST /logout`."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from app.account import current_session, end_session, revoke
from app.answers import SessionAnswer
from app.errors import SignedOut
from app.notices import SignOut
from app.web import JSONResponse, ServicesDep, delete_cookie, require_same_origin, set_cookie

router = APIRouter()
log = logging.getLogger("tobira")


@router.get("/session")
async def session_info(request: Request, services: ServicesDep) -> JSONResponse:
    session = await current_session(services, request.cookies)
    if session is None:
        raise SignedOut()
    answer = SessionAnswer.model_validate(session.public_json())
    return JSONResponse(answer.model_dump(by_alias=True), headers={"Cache-Control": "no-store"})


@router.post("/logout")
async def logout(request: Request, services: ServicesDep) -> Response:
    """Ends the session (on every replica), asks the server to revoke the token, and records for this
    browser's `/signed-out` page what came of it."""
    require_same_origin(request, services)
    session = await current_session(services, request.cookies)
    response = RedirectResponse(services.settings.base_path + "/signed-out", status_code=303)
    if session is not None:
        await end_session(services, session)
        revoked = await revoke(services, session)
        notices = services.notices
        set_cookie(
            response, services, notices.name, notices.issue(SignOut(session.host, revoked)), notices.max_age
        )
        log.info("signed out of %s (token revoked: %s)", session.host, revoked)
    delete_cookie(response, services, services.cookies.session_name)
    return response
