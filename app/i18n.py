"""The six languages of tobira's pages: which one a request gets, and the texts Python hands to pages.

Languages: Japanese, English (the source: every msgid is the English text), French, Korean and Chinese,
Simplified and Traditional (as Misskey itself ships both), tagged in `<html lang>` with their BCP 47 tags
`ja`, `en`, `fr`, `ko`, `zh-Hans`, `zh-Hant`.

Choice, first match wins: `?lang=` (which also sets the `tobira-lang` cookie), the cookie, the
`Accept-Language` header by quality, English. Only the primary subtag counts, except for Chinese: a script
subtag decides (`zh-Hans`, `zh-Hant-TW`), else the region, Traditional for Taiwan, Hong Kong and Macau
(`zh-TW`, `zh-HK`, `zh-MO`) and Simplified for the rest (`zh-CN`, `zh-SG`, a bare `zh`).

Catalogues: `translations/<locale>/LC_MESSAGES/messages.po`, Babel's gettext catalogues. They are compiled
in memory the first time a page needs them (`read_po` → `write_mo` → `Translations`; a few milliseconds for
all six), so no `.mo` file is committed or built and none can fall out of step with its `.po`. An entry
that is empty or fuzzy is not used (the English shows); tests/test_i18n.py fails on either, and on any
message the code or templates use that a catalogue lacks. `python -m app.catalogues` adds new messages to
every catalogue for translating.

Errors: a page shows the translation of the error's own message when it is one of the messages marked
below (the host parser's explanations, the sign-in's own), else the translated message of its ErrorCode:
every code has one. JSON answers (`/session`, `/api/*`) keep tobira's English messages, like Misskey's
API: programs act on the code. `/lookup` is the sign-in form's own helper, so it speaks the page's language.
"""

from __future__ import annotations

import gettext
import logging
import re
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from app.errors import N_, ErrorCode, TobiraError, code_messages, error_classes

TRANSLATIONS_DIR = Path(__file__).resolve().parent.parent / "translations"
COOKIE = "tobira-lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
DOMAIN = "messages"

log = logging.getLogger("tobira")


@dataclass(frozen=True, slots=True)
class Language:
    tag: str  # BCP 47, for <html lang> and ?lang=
    locale: str  # the catalogue's directory under translations/
    name: str  # in the language itself, for the switch


LANGUAGES = (
    Language("ja", "ja", "日本語"),
    Language("en", "en", "English"),
    Language("fr", "fr", "Français"),
    Language("ko", "ko", "한국어"),
    Language("zh-Hans", "zh_Hans", "简体中文"),
    Language("zh-Hant", "zh_Hant", "繁體中文"),
)
SOURCE = "en"
BY_TAG = {language.tag: language for language in LANGUAGES}
_BY_PRIMARY = {"ja": "ja", "en": "en", "fr": "fr", "ko": "ko"}
_TRADITIONAL_REGIONS = frozenset(("tw", "hk", "mo"))
_MAX_ACCEPT_LANGUAGE = 512  # a real header is far shorter; bounds the work on a hostile one
_RANGE = re.compile(r"\s*([A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]{1,5}))?\s*")


def match_language(tag: str | None) -> str | None:
    """The language tag tobira has for a language tag such as "ja-JP", "zh_TW" or "FR"; None if none."""
    if not tag:
        return None
    primary, *rest = tag.strip().replace("_", "-").lower().split("-")
    if primary == "zh":
        return _chinese(rest)
    return _BY_PRIMARY.get(primary)


def _chinese(subtags: list[str]) -> str:
    """Simplified or Traditional, from the subtags after `zh`: the script if there is one, else the region."""
    if "hant" in subtags:
        return "zh-Hant"
    if "hans" in subtags:
        return "zh-Hans"
    return "zh-Hant" if _TRADITIONAL_REGIONS.intersection(subtags) else "zh-Hans"


def from_accept_language(header: str | None) -> str | None:
    """The best language tobira has among an `Accept-Language` header's ranges, by quality then order."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header[:_MAX_ACCEPT_LANGUAGE].split(",")):
        match = _RANGE.fullmatch(item)
        if match is None:
            continue
        try:
            quality = float(match[2]) if match[2] is not None else 1.0
        except ValueError:
            continue
        tag = match_language(match[1])
        if tag is not None and 0 < quality <= 1:
            ranked.append((-quality, position, tag))
    return min(ranked)[2] if ranked else None


def choose_language(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """`?lang=`, then the cookie, then `Accept-Language`, then English."""
    return match_language(query) or match_language(cookie) or from_accept_language(accept_language) or SOURCE


def compile_catalogue(path: Path, locale: str) -> Translations:
    """A `.po` file compiled in memory; empty and fuzzy entries are left out (their English shows)."""
    with path.open("rb") as source:
        catalog = read_po(source, locale=locale, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


@cache
def translations(tag: str) -> gettext.NullTranslations:
    """The compiled catalogue of a language (English: none). A missing catalogue is logged, not fatal."""
    language = BY_TAG[tag]
    if tag == SOURCE:
        return gettext.NullTranslations()
    path = TRANSLATIONS_DIR / language.locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    try:
        return compile_catalogue(path, language.locale)
    except OSError:
        log.error("no catalogue for %s at %s: its pages show English", tag, path)
        return gettext.NullTranslations()


# One message per error code: what a page says when the error's own message is not a known one.
ERROR_MESSAGES: dict[ErrorCode, str] = code_messages()

# Messages the code raises that say more than their code's message, each translated as it is.
KNOWN_MESSAGES = frozenset(
    {
        # app/errors.py: every class's own message
        *(cls.default_message for cls in error_classes()),
        # app/hosts.py: why what was typed is not a usable server name
        N_("Type the name of your Misskey server, for example misskey.io."),
        N_("That is too long to be a server name."),
        N_("A server name cannot contain spaces, control characters or backslashes."),
        N_("A server name cannot contain percent-encoded characters."),
        N_("Type just the server name, without a '?' or '#' part."),
        N_("tobira only connects to servers over https, not plain http."),
        N_("Only https:// addresses can be used."),
        N_("An address with a user name or password before the server name cannot be used."),
        N_("A handle looks like @alice@misskey.io."),
        N_("Type just the server name, or a profile address such as https://misskey.io/@alice."),
        N_("That profile is on another server: type the name of your own server."),
        N_("tobira only connects to servers on the standard https port (443)."),
        N_("Type the server's name, not an IP address."),
        N_("That name is reserved for local or special use; it is not a public server."),
        N_("A server name has at least one dot, as in misskey.io."),
        N_("That is not a valid server name."),
        # app/guard.py, app/errors.py
        N_("The server's answer is too large."),
        N_("The server has no such API endpoint."),
    }
)

# What each permission lets the app do, in plain words. Administration permissions share one per kind.
PERMISSIONS: dict[str, str] = {
    "read:account": N_("See your account details"),
    "write:account": N_("Change your profile and account settings"),
    "read:blocks": N_("See who you have blocked"),
    "write:blocks": N_("Block and unblock people"),
    "read:drive": N_("See the files in your Drive"),
    "write:drive": N_("Upload, change and delete files in your Drive"),
    "read:favorites": N_("See your favorites"),
    "write:favorites": N_("Add and remove favorites"),
    "read:following": N_("See who you follow and your follow requests"),
    "write:following": N_("Follow and unfollow people, and answer follow requests"),
    "read:messaging": N_("Read your messages in the older chat"),
    "write:messaging": N_("Send and delete messages in the older chat"),
    "read:mutes": N_("See who you have muted"),
    "write:mutes": N_("Mute and unmute people"),
    "write:notes": N_("Post and delete notes"),
    "read:notifications": N_("See your notifications"),
    "write:notifications": N_("Mark your notifications as read and send you notifications"),
    "read:reactions": N_("See your reactions"),
    "write:reactions": N_("Add and remove reactions"),
    "write:votes": N_("Vote in polls"),
    "read:pages": N_("See your Pages"),
    "write:pages": N_("Create, change and delete your Pages"),
    "read:page-likes": N_("See the Pages you have liked"),
    "write:page-likes": N_("Like and unlike Pages"),
    "read:user-groups": N_("See your user groups"),
    "write:user-groups": N_("Create and manage user groups"),
    "read:channels": N_("See your channels"),
    "write:channels": N_("Create, follow and manage channels"),
    "read:gallery": N_("See your gallery posts"),
    "write:gallery": N_("Post, change and delete gallery posts"),
    "read:gallery-likes": N_("See the gallery posts you have liked"),
    "write:gallery-likes": N_("Like and unlike gallery posts"),
    "read:flash": N_("See your Play scripts"),
    "write:flash": N_("Create, change and delete Play scripts"),
    "read:flash-likes": N_("See the Play scripts you have liked"),
    "write:flash-likes": N_("Like and unlike Play scripts"),
    "read:invite-codes": N_("See your invitation codes"),
    "write:invite-codes": N_("Create invitation codes"),
    "read:clip-favorite": N_("See the clips you have liked"),
    "write:clip-favorite": N_("Like and unlike clips"),
    "read:federation": N_("See which other servers your server federates with"),
    "write:report-abuse": N_("Report people and content to your server's moderators"),
    "read:chat": N_("Read your chat messages"),
    "write:chat": N_("Send and delete chat messages"),
}
ADMIN_READ = N_("See your server's moderation and administration data (moderators only)")
ADMIN_WRITE = N_("Carry out moderation and administration on your server (moderators only)")


def permission_words(name: str) -> str:
    """The untranslated plain-words description of a permission name (the name itself if unknown)."""
    if name in PERMISSIONS:
        return PERMISSIONS[name]
    if name.startswith("read:admin:"):
        return ADMIN_READ
    if name.startswith("write:admin:"):
        return ADMIN_WRITE
    return name


def error_words(error: TobiraError) -> str:
    """The untranslated message a page shows for an error: its own if known here, else its code's."""
    if error.message in KNOWN_MESSAGES:
        return error.message
    return ERROR_MESSAGES[error.code]


@dataclass(frozen=True, slots=True)
class Localizer:
    """One language's texts for one page."""

    language: Language
    catalogue: gettext.NullTranslations

    @property
    def tag(self) -> str:
        return self.language.tag

    def gettext(self, message: str) -> str:
        return self.catalogue.gettext(message)

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        return self.catalogue.ngettext(singular, plural, count)

    def error_message(self, error: TobiraError) -> str:
        return self.gettext(error_words(error))

    def permission(self, name: str) -> str:
        return self.gettext(permission_words(name))


def localizer(tag: str) -> Localizer:
    """The Localizer of a tag from LANGUAGES (KeyError for any other)."""
    return Localizer(BY_TAG[tag], translations(tag))
