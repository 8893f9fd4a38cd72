"""Keeping the translation catalogues in step with the code: which messages it uses, and adding new ones.

`extract()` reads every message the templates (`{% trans %}`, `_()`) and the Python code (`_()`, `N_()`)
use, with Babel's own extractors; tests/test_i18n.py checks each catalogue against it. After adding or
changing a message, `python -m app.catalogues` adds it, untranslated, to every catalogue (and drops the
messages nothing uses any more); translate the new entries, and the tests pass again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from app.i18n import DOMAIN, LANGUAGES, SOURCE, TRANSLATIONS_DIR

ROOT = Path(__file__).resolve().parent.parent
# (directory, Babel method map, options map) for each place messages come from.
SOURCES: tuple[tuple[Path, list[tuple[str, str]], dict[str, dict[str, Any]]], ...] = (
    (ROOT / "app", [("**.py", "python")], {}),
    (ROOT / "templates", [("**.html", "jinja2.ext:babel_extract")], {"**.html": {"trimmed": "true"}}),
)


def extract() -> Catalog:
    """Every message the code and the templates use, as a template catalogue (no translations)."""
    catalog = Catalog(domain=DOMAIN, project="tobira", fuzzy=False)
    for directory, method_map, options in SOURCES:
        for filename, lineno, message, comments, context in extract_from_dir(directory, method_map, options):
            location = (str((directory / filename).relative_to(ROOT)), lineno)
            catalog.add(message, None, [location], auto_comments=comments, context=context)
    return catalog


HEADER = """\
# {language} translations of tobira's pages and error messages.
# The msgids are the English texts. After changing messages: python -m app.catalogues, then translate."""


def catalogue_path(locale: str) -> Path:
    return TRANSLATIONS_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


def new_catalogue(locale: str) -> Catalog:
    """An empty catalogue for a locale, with tobira's header."""
    catalog = Catalog(
        locale=locale,
        domain=DOMAIN,
        project="tobira",
        msgid_bugs_address="",
        last_translator="tobira",
        language_team=f"tobira <{locale}>",
        fuzzy=False,
    )
    catalog.header_comment = HEADER.format(language=catalog.locale.english_name if catalog.locale else locale)
    catalog.revision_date = catalog.creation_date
    return catalog


def write_catalogue(path: Path, catalog: Catalog) -> None:
    """Written as every catalogue is: no line numbers (they churn), wrapped at 110 columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as target:
        write_po(target, catalog, width=110, include_lineno=False)


def update() -> list[Path]:
    """Merge the extracted messages into every catalogue; returns the files written."""
    template = extract()
    written = []
    for language in LANGUAGES:
        if language.tag == SOURCE:
            continue
        path = catalogue_path(language.locale)
        if path.exists():
            with path.open("rb") as source:
                catalog = read_po(source, locale=language.locale, domain=DOMAIN)
        else:
            catalog = new_catalogue(language.locale)
        created = catalog.creation_date  # update() would take the template's: a diff on every run
        catalog.update(template, no_fuzzy_matching=True)
        catalog.creation_date = created
        catalog.obsolete.clear()
        write_catalogue(path, catalog)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in update():
        print(path.relative_to(ROOT))
