"""What tobira knows about Misskey's forks, by the software name their nodeinfo gives: kept in one place.

- How each project writes its own name, for pages.
- Which of them speak Misskey's own OAuth 2.0 flow. The metadata alone does not tell: a real Sharkey 2025.5.2
  publishes OAuth 2.0 metadata identical to Misskey's, yet its `/oauth/authorize` is Mastodon's flow and
  answers a Misskey-style request with HTTP 500 (`shared/PROTOCOL.md` §4). MiAuth works there.
"""

from __future__ import annotations

# nodeinfo's software names (lower case) as their projects write them.
DISPLAY_NAMES = {
    "misskey": "Misskey",
    "sharkey": "Sharkey",
    "cherrypick": "CherryPick",
    "firefish": "Firefish",
    "calckey": "Calckey",
    "iceshrimp": "Iceshrimp",
    "foundkey": "FoundKey",
    "meisskey": "Meisskey",
    "catodon": "Catodon",
    "magnetar": "Magnetar",
    "mitra": "Mitra",
}
# Forks whose OAuth 2.0 endpoints are not Misskey's flow, although their metadata looks like Misskey's.
OTHER_OAUTH2_FLOW = frozenset({"sharkey"})


def display_name(software: str | None) -> str | None:
    """The software's name as its project writes it (the name as given when unknown)."""
    return DISPLAY_NAMES.get(software, software) if software else None


def speaks_misskey_oauth2(software: str | None) -> bool:
    """Whether a server running `software` (None: it did not say) can be sent to Misskey's OAuth 2.0 flow
    when its metadata offers it."""
    return software not in OTHER_OAUTH2_FLOW
