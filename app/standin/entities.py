"""The JSON objects the stand-in sends, shaped like Misskey's packed entities.

Field names and nesting follow the server's OpenAPI schemas (`UserLite`, `UserDetailedNotMe`, `MeDetailed`,
`Note`, `DriveFile`, `MetaDetailed`) and its nodeinfo documents; values are those of a quiet, fresh server.
Only a useful subset of the ~44 user fields is filled, never an e-mail address or an admin flag for others.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.standin.config import StandinConfig, StandinUser
from app.standin.state import DriveFileRecord, NoteRecord

REPOSITORY_URL = "https://github.com/misskey-dev/misskey"
ICON_PATH = "/static-assets/icons/192.png"
MAX_NOTE_TEXT_LENGTH = 3000
_ACCOUNT_CREATED = datetime(2026, 1, 1, tzinfo=UTC)

# A subset of Misskey's DEFAULT_POLICIES, as `i` reports them for an ordinary account.
POLICIES = {
    "gtlAvailable": True,
    "ltlAvailable": True,
    "canPublicNote": True,
    "canInvite": False,
    "canManageCustomEmojis": False,
    "canSearchNotes": False,
    "canUseTranslator": True,
    "canHideAds": False,
    "driveCapacityMb": 100,
    "maxFileSizeMb": 30,
    "alwaysMarkNsfw": False,
    "pinLimit": 5,
    "antennaLimit": 5,
    "wordMuteLimit": 200,
    "webhookLimit": 3,
    "clipLimit": 10,
    "userListLimit": 10,
    "rateLimitFactor": 1,
    "mentionLimit": 20,
}


def iso(moment: datetime) -> str:
    """JavaScript's `Date.toISOString()`: milliseconds and a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def avatar_url(config: StandinConfig, user: StandinUser) -> str:
    return user.avatar_url or f"{config.base_url}/avatar/{user.id}"


def user_lite(config: StandinConfig, user: StandinUser) -> dict[str, object]:
    return {
        "id": user.id,
        "name": user.name,
        "username": user.username,
        "host": None,
        "avatarUrl": avatar_url(config, user),
        "avatarBlurhash": None,
        "avatarDecorations": [],
        "isBot": user.is_bot,
        "isCat": user.is_cat,
        "requireSigninToViewContents": False,
        "makeNotesFollowersOnlyBefore": None,
        "makeNotesHiddenBefore": None,
        "emojis": {},
        "onlineStatus": "unknown",
        "badgeRoles": [],
    }


def user_detailed_not_me(config: StandinConfig, user: StandinUser, notes_count: int) -> dict[str, object]:
    """The public profile `miauth/…/check` returns (no viewer, so no relation fields)."""
    return {
        **user_lite(config, user),
        "url": None,
        "uri": None,
        "movedTo": None,
        "alsoKnownAs": None,
        "createdAt": iso(_ACCOUNT_CREATED),
        "updatedAt": None,
        "lastFetchedAt": None,
        "bannerUrl": None,
        "bannerBlurhash": None,
        "isLocked": False,
        "isSilenced": False,
        "isSuspended": False,
        "description": None,
        "location": None,
        "birthday": None,
        "lang": None,
        "fields": [],
        "verifiedLinks": [],
        "followersCount": 0,
        "followingCount": 0,
        "notesCount": notes_count,
        "pinnedNoteIds": [],
        "pinnedNotes": [],
        "pinnedPageId": None,
        "pinnedPage": None,
        "publicReactions": True,
        "followingVisibility": "public",
        "followersVisibility": "public",
        "chatScope": "mutual",
        "canChat": True,
        "roles": [],
        "memo": None,
    }


def me_detailed(config: StandinConfig, user: StandinUser, notes_count: int) -> dict[str, object]:
    """What `i` returns to an app token: the profile plus the owner's own settings (no e-mail)."""
    return {
        **user_detailed_not_me(config, user, notes_count),
        "avatarId": None,
        "bannerId": None,
        "followedMessage": None,
        "isModerator": user.is_moderator,
        "isAdmin": False,
        "injectFeaturedNote": True,
        "receiveAnnouncementEmail": True,
        "alwaysMarkNsfw": False,
        "autoSensitive": False,
        "carefulBot": False,
        "autoAcceptFollowed": True,
        "noCrawle": False,
        "preventAiLearning": True,
        "isExplorable": True,
        "isDeleted": False,
        "twoFactorBackupCodesStock": "none",
        "hideOnlineStatus": False,
        "hasUnreadSpecifiedNotes": False,
        "hasUnreadMentions": False,
        "hasUnreadAnnouncement": False,
        "unreadAnnouncements": [],
        "hasUnreadAntenna": False,
        "hasUnreadChannel": False,
        "hasUnreadChatMessages": False,
        "hasUnreadNotification": False,
        "hasPendingReceivedFollowRequest": False,
        "unreadNotificationsCount": 0,
        "mutedWords": [],
        "hardMutedWords": [],
        "mutedInstances": [],
        "notificationRecieveConfig": {},
        "emailNotificationTypes": [],
        "achievements": [],
        "loggedInDays": 1,
        "policies": POLICIES,
        "twoFactorEnabled": False,
        "usePasswordLessLogin": False,
        "securityKeys": False,
    }


def drive_file(config: StandinConfig, record: DriveFileRecord) -> dict[str, object]:
    """A drive file as its owner sees it (`self: true`: no nested user or folder)."""
    return {
        "id": record.id,
        "createdAt": iso(record.created_at),
        "name": record.name,
        "type": record.type,
        "md5": record.md5,
        "size": len(record.content),
        "isSensitive": record.is_sensitive,
        "blurhash": None,
        "properties": record.properties,
        "url": f"{config.base_url}/files/{record.id}",
        "thumbnailUrl": None,
        "comment": record.comment,
        "folderId": None,
        "folder": None,
        "userId": record.user.id,
        "user": None,
    }


def note(config: StandinConfig, record: NoteRecord, files: list[DriveFileRecord]) -> dict[str, object]:
    return {
        "id": record.id,
        "createdAt": iso(record.created_at),
        "userId": record.user.id,
        "user": user_lite(config, record.user),
        "text": record.text,
        "cw": record.cw,
        "visibility": record.visibility,
        "localOnly": record.local_only,
        "reactionAcceptance": None,
        "renoteCount": 0,
        "repliesCount": 0,
        "reactionCount": 0,
        "reactions": {},
        "reactionEmojis": {},
        "emojis": {},
        "fileIds": list(record.file_ids),
        "files": [drive_file(config, file) for file in files],
        "replyId": record.reply_id,
        "renoteId": record.renote_id,
        "clippedCount": 0,
    }


def meta(config: StandinConfig, detail: bool) -> dict[str, object]:
    """`api/meta`: MetaLite, plus `features` and friends when `detail` (the default) is true."""
    lite: dict[str, object] = {
        "maintainerName": None,
        "maintainerEmail": None,
        "version": config.version,
        "providesTarball": False,
        "name": config.name,
        "shortName": None,
        "uri": config.base_url,
        "description": None,
        "langs": [],
        "tosUrl": None,
        "repositoryUrl": REPOSITORY_URL,
        "feedbackUrl": f"{REPOSITORY_URL}/issues/new",
        "defaultDarkTheme": None,
        "defaultLightTheme": None,
        "clientOptions": {},
        "disableRegistration": False,
        "emailRequiredForSignup": False,
        "enableHcaptcha": False,
        "hcaptchaSiteKey": None,
        "enableMcaptcha": False,
        "mcaptchaSiteKey": None,
        "mcaptchaInstanceUrl": None,
        "enableRecaptcha": False,
        "recaptchaSiteKey": None,
        "enableTurnstile": False,
        "turnstileSiteKey": None,
        "enableTestcaptcha": False,
        "googleAnalyticsMeasurementId": None,
        "swPublickey": None,
        "mascotImageUrl": "/assets/ai.png",
        "bannerUrl": None,
        "serverErrorImageUrl": None,
        "infoImageUrl": None,
        "notFoundImageUrl": None,
        "iconUrl": config.base_url + ICON_PATH,
        "maxNoteTextLength": MAX_NOTE_TEXT_LENGTH,
        "ads": [],
        "notesPerOneAd": 0,
        "enableEmail": False,
        "enableServiceWorker": False,
        "translatorAvailable": False,
        "sentryForFrontend": None,
        "mediaProxy": f"{config.base_url}/proxy",
        "enableUrlPreview": True,
        "backgroundImageUrl": None,
        "impressumUrl": None,
        "logoImageUrl": None,
        "privacyPolicyUrl": None,
        "inquiryUrl": None,
        "serverRules": [],
        "themeColor": None,
        "policies": POLICIES,
        "noteSearchableScope": "local",
        "maxFileSize": 262_144_000,
        "federation": "all" if config.federation else "none",
    }
    if not detail:
        return lite
    return {
        **lite,
        "features": {
            "registration": True,
            "emailRequiredForSignup": False,
            "localTimeline": True,
            "globalTimeline": True,
            "hcaptcha": False,
            "turnstile": False,
            "recaptcha": False,
            "objectStorage": False,
            "serviceWorker": False,
            # Servers before 12.28 have no such flag; none that has it ever says false.
            **({"miauth": True} if config.miauth else {}),
        },
        "proxyAccountName": "proxy",
        "requireSetup": False,
        "cacheRemoteFiles": False,
        "cacheRemoteSensitiveFiles": False,
    }


def nodeinfo_links(config: StandinConfig) -> dict[str, object]:
    return {
        "links": [
            {
                "rel": "http://nodeinfo.diaspora.software/ns/schema/2.1",
                "href": f"{config.base_url}/nodeinfo/2.1",
            },
            {
                "rel": "http://nodeinfo.diaspora.software/ns/schema/2.0",
                "href": f"{config.base_url}/nodeinfo/2.0",
            },
        ]
    }


def nodeinfo(config: StandinConfig, version: str, users: int, local_posts: int) -> dict[str, object]:
    """A nodeinfo 2.0 or 2.1 document; only 2.1 names the repository."""
    software: dict[str, object] = {"name": config.software, "version": config.version}
    if version == "2.1":
        software.update(homepage=REPOSITORY_URL, repository=REPOSITORY_URL)
    else:
        software["homepage"] = "https://misskey-hub.net"
    return {
        "version": version,
        "software": software,
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": ["atom1.0", "rss2.0"]},
        "openRegistrations": True,
        "usage": {
            "users": {"total": users, "activeHalfyear": None, "activeMonth": None},
            "localPosts": local_posts,
            "localComments": 0,
        },
        "metadata": {
            "nodeName": config.name,
            "nodeDescription": None,
            "nodeAdmins": [{"name": None, "email": None}],
            "maintainer": {"name": None, "email": None},
            "langs": [],
            "tosUrl": None,
            "privacyPolicyUrl": None,
            "inquiryUrl": None,
            "impressumUrl": None,
            "repositoryUrl": REPOSITORY_URL,
            "feedbackUrl": f"{REPOSITORY_URL}/issues/new",
            "disableRegistration": False,
            "disableLocalTimeline": False,
            "disableGlobalTimeline": False,
            "emailRequiredForSignup": False,
            "enableHcaptcha": False,
            "enableRecaptcha": False,
            "enableMcaptcha": False,
            "enableTurnstile": False,
            "maxNoteTextLength": MAX_NOTE_TEXT_LENGTH,
            "enableEmail": False,
            "enableServiceWorker": False,
            "proxyAccountName": "proxy",
            "themeColor": "#86b300",
        },
    }
