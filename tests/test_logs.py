"""Redaction of secrets in every log record: the patterns, and the record factory under any logger."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from app.logs import REDACTED, configure_logging, redact

SECRET = "TOKENq7Zr4Wm9Pk2Ls8Dv5Nb3Xy6Ab1Cd"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"/streaming?i={SECRET}", f"/streaming?i={REDACTED}"),
        (f"wss://a.example/streaming?_t=1&i={SECRET}", f"wss://a.example/streaming?_t=1&i={REDACTED}"),
        (f"/callback?session={SECRET}&x=1", f"/callback?session={REDACTED}&x=1"),
        (f"/callback/legacy?token={SECRET}", f"/callback/legacy?token={REDACTED}"),
        (
            f"/callback/oauth2?code={SECRET}&state={SECRET}",
            f"/callback/oauth2?code={REDACTED}&state={REDACTED}",
        ),
        (f'{{"i": "{SECRET}", "text": "hi"}}', f'{{"i": "{REDACTED}", "text": "hi"}}'),
        (f"{{'token': '{SECRET}'}}", f"{{'token': '{REDACTED}'}}"),
        (f'{{"accessToken":"{SECRET}"}}', f'{{"accessToken":"{REDACTED}"}}'),
        (f'{{"appSecret": "{SECRET}"}}', f'{{"appSecret": "{REDACTED}"}}'),
        (f"Authorization: Bearer {SECRET}", f"Authorization: Bearer {REDACTED}"),
        (f"cookie: tobira={SECRET}; other=1", f"cookie: tobira={REDACTED}; other=1"),
        (f"__Host-tobira-signin={SECRET}", f"__Host-tobira-signin={REDACTED}"),
        (
            f"/oidc/logout?id_token_hint={SECRET}&state={SECRET}",
            f"/oidc/logout?id_token_hint={REDACTED}&state={REDACTED}",
        ),
        (f'{{"misskey_access_token": "{SECRET}"}}', f'{{"misskey_access_token": "{REDACTED}"}}'),
        # Not secrets: kept as they are.
        ("/login?instance=misskey.io&return_to=/", "/login?instance=misskey.io&return_to=/"),
        ("signed in with misskey.io", "signed in with misskey.io"),
        ("/streaming?id=1", "/streaming?id=1"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """A handler on the root logger, with the record factory as it was restored afterwards."""
    factory = logging.getLogRecordFactory()
    configure_logging("INFO")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        logging.setLogRecordFactory(factory)


def test_every_logger_is_redacted(captured: io.StringIO) -> None:
    library = logging.getLogger("some.library")
    library.warning("opening %s", f"wss://a.example/streaming?i={SECRET}")
    library.warning("straddling ?i=%s", SECRET)  # the secret's name in the format, its value an argument
    library.warning("as an object: %s", ValueError(f"bad URI https://a.example/?i={SECRET}"))
    try:
        raise ValueError(f"InvalidURI https://a.example/moved?i={SECRET}")
    except ValueError:
        library.exception("failed")
    output = captured.getvalue()
    assert SECRET not in output
    # Four records; the traceback quotes the raising line's source too.
    assert output.count(REDACTED) >= 4
    assert "Traceback" in output and "ValueError" in output


def test_numbers_stay_numbers_for_formatters_that_read_args(captured: io.StringIO) -> None:
    # uvicorn's access formatter unpacks the record's arguments itself: they must stay a tuple.
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    access = logging.getLogger("uvicorn.access.test")
    keep = Keep()
    access.addHandler(keep)
    access.setLevel(logging.INFO)
    try:
        access.info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/callback?session={SECRET}", "1.1", 303
        )
    finally:
        access.removeHandler(keep)
    (record,) = records
    assert record.args == ("127.0.0.1:5", "GET", f"/callback?session={REDACTED}", "1.1", 303)
    assert SECRET not in record.getMessage()


def test_configuring_twice_wraps_once() -> None:
    factory = logging.getLogRecordFactory()
    try:
        configure_logging("INFO")
        once = logging.getLogRecordFactory()
        configure_logging("INFO")
        assert logging.getLogRecordFactory() is once
    finally:
        logging.setLogRecordFactory(factory)
