"""tobira's own JSON answers as pydantic models: what the routes send and what the OpenAPI document says.

Each model is the one description of its answer: the route builds it, `app.openapi` takes its schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.discovery import ServerInfo
from app.software import display_name


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class ServerPreview(Answer):
    """`GET /lookup`: what a server says about itself, for the sign-in form."""

    host: str
    name: str | None
    icon_url: str | None = Field(serialization_alias="iconUrl")
    software: str | None
    software_name: str | None = Field(serialization_alias="softwareName")
    version: str | None
    miauth: bool
    missing_permissions: list[str] = Field(serialization_alias="missingPermissions")

    @classmethod
    def of(cls, info: ServerInfo, permissions: list[str]) -> ServerPreview:
        return cls(
            host=info.host,
            name=info.name,
            icon_url=info.icon_url,
            software=info.software,
            software_name=display_name(info.software),
            version=info.software_version or info.version,
            miauth=info.miauth,
            missing_permissions=info.missing(permissions),
        )


class User(Answer):
    """The few profile fields a session keeps, each a string or null."""

    id: str | None
    username: str | None
    host: str | None
    name: str | None
    avatar_url: str | None = Field(alias="avatarUrl")


class SessionAnswer(Answer):
    """`GET /session`: who is signed in, never the token or the session id."""

    instance: str
    user: User
    method: str
    server: dict[str, Any]


class Health(Answer):
    """`GET /healthz` and `GET /readyz`: `ok`, or (readiness) `store unavailable`."""

    status: str
