"""The permission names an app may ask a Misskey server for: misskey-js's list of 85, read off a real
Misskey 2026.5.4 (`app/data/permissions.json`). Forks may offer fewer; each server's own list comes from
discovery (`scopes_supported`)."""

from __future__ import annotations

import json
from importlib import resources

KNOWN_PERMISSIONS: frozenset[str] = frozenset(
    json.loads(resources.files("app").joinpath("data/permissions.json").read_text("utf-8"))
)
