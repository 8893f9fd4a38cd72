"""The stand-in's table of Misskey's 434 API endpoints and 85 permissions.

Credential, permission and `secure` come from `app/data/endpoints.json`; the permission names from
`app/data/permissions.json` (both read off a real 2026.5.4 server). The three name sets below were generated
from that server's OpenAPI document (`/api.json`): which endpoints answer a JSON array, which answer
`204 No Content`, and which also accept GET. Every other endpoint answers a JSON object. The stand-in uses
them to answer the endpoints it does not implement with the right shape, and never needs the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

FILE_ENDPOINTS = frozenset({"drive/files/create"})  # the only multipart/form-data endpoint

ResultKind = Literal["array", "object", "none"]


@dataclass(frozen=True)
class Endpoint:
    """What the server checks before running an endpoint, and the shape of its success answer."""

    name: str
    credential: bool
    permission: str | None
    secure: bool

    @property
    def result_kind(self) -> ResultKind:
        if self.name in ARRAY_RESULTS:
            return "array"
        if self.name in NO_CONTENT_RESULTS:
            return "none"
        return "object"

    @property
    def allow_get(self) -> bool:
        return self.name in GET_ALLOWED

    @property
    def takes_file(self) -> bool:
        return self.name in FILE_ENDPOINTS

    @property
    def needs_moderator(self) -> bool:
        # The real server asks for a moderator or administrator role per endpoint; the table does not say
        # which, so every credentialed admin/* endpoint asks for a moderator here.
        return self.credential and self.name.startswith("admin/")


def _read_data(name: str) -> object:
    return json.loads((resources.files("app") / "data" / name).read_text(encoding="utf-8"))


@cache
def endpoints() -> dict[str, Endpoint]:
    """Every endpoint by name (no leading slash), as the real server defines it."""
    table = _read_data("endpoints.json")
    assert isinstance(table, dict)
    return {
        path.lstrip("/"): Endpoint(
            name=path.lstrip("/"),
            credential=meta["credential"] == "Yes",
            permission=meta["permission"],
            secure=bool(meta["secure"]),
        )
        for path, meta in table.items()
    }


@cache
def permissions() -> frozenset[str]:
    """The permission names an app may request (misskey-js `permissions`)."""
    names = _read_data("permissions.json")
    assert isinstance(names, list)
    return frozenset(str(name) for name in names)


ARRAY_RESULTS = frozenset(
    """
    admin/abuse-report/notification-recipient/list admin/abuse-user-reports admin/ad/list
    admin/announcements/list admin/avatar-decorations/list admin/drive/files admin/emoji/list
    admin/emoji/list-remote admin/get-index-stats admin/get-user-ips admin/invite/create
    admin/invite/list admin/queue/deliver-delayed admin/queue/inbox-delayed admin/queue/jobs
    admin/queue/queues admin/queue/show-job-logs admin/relays/list admin/roles/list admin/roles/users
    admin/show-moderation-logs admin/show-users admin/system-webhook/list announcements antennas/list
    antennas/notes blocking/list bubble-game/ranking channels/featured channels/followed
    channels/mute/list channels/my-favorites channels/owned channels/search channels/timeline
    chat/history chat/messages/room-timeline chat/messages/search chat/messages/user-timeline
    chat/rooms/invitations/inbox chat/rooms/invitations/outbox chat/rooms/joining chat/rooms/members
    chat/rooms/owned clips/list clips/my-favorites clips/notes drive/files drive/files/attached-chat-
    messages drive/files/attached-notes drive/files/find drive/files/find-by-hash drive/folders
    drive/folders/find drive/stream endpoints federation/followers federation/following
    federation/instances federation/users flash/featured flash/my flash/my-likes flash/search
    following/list following/requests/list following/requests/sent gallery/featured gallery/popular
    gallery/posts get-avatar-decorations hashtags/list hashtags/search hashtags/trend hashtags/users
    i/apps i/authorized-apps i/favorites i/gallery/likes i/gallery/posts i/notifications
    i/notifications-grouped i/page-likes i/pages i/registry/keys i/registry/scopes-with-domain i/signin-
    history i/webhooks/list invite/list mute/list my/apps notes notes/children notes/clips
    notes/conversation notes/drafts/list notes/featured notes/global-timeline notes/hybrid-timeline
    notes/local-timeline notes/mentions notes/polls/recommendation notes/reactions notes/renotes
    notes/replies notes/search notes/search-by-tag notes/show-partial-bulk notes/timeline notes/user-
    list-timeline pages/featured pinned-users renote-mute/list retention reversi/games
    reversi/invitations roles/list roles/notes roles/users users users/achievements users/clips
    users/featured-notes users/flashs users/followers users/following users/gallery/posts users/get-
    following-users-by-birthday users/get-frequently-replied-users users/lists/get-memberships
    users/lists/list users/notes users/pages users/reactions users/recommendation users/search
    users/search-by-username-and-host
    """.split()
)

NO_CONTENT_RESULTS = frozenset(
    """
    admin/abuse-report/notification-recipient/delete admin/accounts/delete admin/ad/delete
    admin/ad/update admin/announcements/delete admin/announcements/update admin/avatar-
    decorations/delete admin/avatar-decorations/update admin/captcha/save admin/delete-account
    admin/delete-all-files-of-a-user admin/drive/clean-remote-files admin/drive/cleanup admin/emoji/add-
    aliases-bulk admin/emoji/delete admin/emoji/delete-bulk admin/emoji/import-zip admin/emoji/remove-
    aliases-bulk admin/emoji/set-aliases-bulk admin/emoji/set-category-bulk admin/emoji/set-license-bulk
    admin/emoji/update admin/federation/delete-all-files admin/federation/refresh-remote-instance-
    metadata admin/federation/remove-all-following admin/federation/update-instance admin/forward-abuse-
    user-report admin/promo/create admin/queue/clear admin/queue/promote-jobs admin/queue/remove-job
    admin/queue/retry-job admin/relays/remove admin/resolve-abuse-user-report admin/roles/assign
    admin/roles/delete admin/roles/unassign admin/roles/update admin/roles/update-default-policies
    admin/send-email admin/suspend-user admin/system-webhook/delete admin/system-webhook/test
    admin/unset-user-avatar admin/unset-user-banner admin/unsuspend-user admin/update-abuse-user-report
    admin/update-meta admin/update-user-note antennas/delete auth/accept bubble-game/register
    channels/favorite channels/follow channels/mute/create channels/mute/delete channels/unfavorite
    channels/unfollow chat/messages/delete chat/messages/react chat/messages/unreact chat/read-all
    chat/rooms/delete chat/rooms/invitations/ignore chat/rooms/join chat/rooms/leave chat/rooms/mute
    clips/add-note clips/delete clips/favorite clips/remove-note clips/unfavorite drive/files/delete
    drive/files/move-bulk drive/files/upload-from-url drive/folders/delete export-custom-emojis
    federation/update-remote-user flash/delete flash/like flash/unlike flash/update
    following/requests/accept following/requests/reject following/update-all gallery/posts/delete
    gallery/posts/like gallery/posts/unlike i/2fa/password-less i/2fa/remove-key i/2fa/unregister
    i/2fa/update-key i/change-password i/claim-achievement i/delete-account i/export-antennas i/export-
    blocking i/export-clips i/export-favorites i/export-following i/export-mute i/export-notes i/export-
    user-lists i/import-antennas i/import-blocking i/import-following i/import-muting i/import-user-
    lists i/read-announcement i/regenerate-token i/registry/remove i/registry/set i/revoke-token
    i/webhooks/delete i/webhooks/test i/webhooks/update invite/delete mute/create mute/delete
    notes/delete notes/drafts/delete notes/favorites/create notes/favorites/delete notes/polls/vote
    notes/reactions/create notes/reactions/delete notes/thread-muting/create notes/thread-muting/delete
    notes/unrenote notifications/create notifications/flush notifications/mark-all-as-read
    notifications/test-notification page-push pages/delete pages/like pages/unlike pages/update
    promo/read renote-mute/create renote-mute/delete request-reset-password reset-db reset-password
    reversi/cancel-match reversi/surrender sw/unregister users/lists/delete users/lists/favorite
    users/lists/pull users/lists/push users/lists/unfavorite users/lists/update-membership users/report-
    abuse users/update-memo verify-email
    """.split()
)

GET_ALLOWED = frozenset(
    """
    bubble-game/ranking charts/active-users charts/ap-request charts/drive charts/federation
    charts/instance charts/notes charts/user/drive charts/user/following charts/user/notes
    charts/user/pv charts/user/reactions charts/users emoji emojis federation/instances federation/stats
    fetch-rss get-online-users-count hashtags/trend notes/featured notes/reactions retention server-info
    users/featured-notes
    """.split()
)
