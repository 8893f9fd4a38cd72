"""Logging: tobira's own logger, and redaction of secrets in every log record of the process.

tobira's own log lines never contain a token, a session id or a cookie by construction. Other code logs too:
uvicorn's access log prints each request's path with its query (`/callback?session=…` carries a one-shot
secret there), and a library's exception text may quote a URL that holds a token (websockets once put
`/streaming?i=TOKEN` into an `InvalidURI`). So every record made in the process, by any logger, passes
through `redact` before any handler sees it: its message with its arguments filled in, its exception text
and its stack. Redaction replaces the value of secret query parameters, of secret JSON or Python-dict
fields, of bearer credentials and of tobira's cookies with `[redacted]`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

REDACTED = "[redacted]"
# Names whose values are secrets wherever they appear: MiAuth and legacy tokens, OAuth codes and states,
# app secrets, the API key `i`; OpenID ID tokens offered back as hints and the Misskey tokens apps receive.
_REDACTED_NAMES = (
    r"i|session|token|code|state|code_verifier|access_token|accesstoken|refresh_token|id_token"
    r"|appsecret|secret|client_secret|id_token_hint|misskey_access_token"
)
SECRET_QUERY = re.compile(rf"([?&;](?:{_REDACTED_NAMES})=)[^&#;\s\"'<>]*", re.IGNORECASE)
SECRET_FIELD = re.compile(rf"""(["'](?:{_REDACTED_NAMES})["']\s*:\s*["'])[^"']*""", re.IGNORECASE)
BEARER = re.compile(r"(\bBearer\s+)[^\s,;\"']+", re.IGNORECASE)
COOKIE = re.compile(r"((?:__Host-|__Secure-)?tobira(?:-[a-z-]+)?=)[^;\s\"']+")
_PATTERNS = (SECRET_QUERY, SECRET_FIELD, BEARER, COOKIE)


def redact(text: str) -> str:
    """`text` with every secret value this module recognises replaced by `[redacted]`."""
    for pattern in _PATTERNS:
        text = pattern.sub(rf"\1{REDACTED}", text)
    return text


def _safe(arg: Any) -> Any:
    """A log argument with its secrets redacted; numbers stay numbers, so `%d` still formats them."""
    if arg is None or isinstance(arg, bool | int | float):
        return arg
    return redact(arg if isinstance(arg, str) else str(arg))


def _redact_record(record: logging.LogRecord) -> None:
    """Redact a record in place: its arguments one by one (formatters such as uvicorn's access log read
    them), then the whole message, in case a secret straddles the format string and an argument."""
    if isinstance(record.args, tuple):
        record.args = tuple(_safe(arg) for arg in record.args)
    elif isinstance(record.args, Mapping):
        record.args = {key: _safe(value) for key, value in record.args.items()}
    if not isinstance(record.msg, str):
        record.msg = str(record.msg)
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):  # a malformed call: show its parts, as logging would
        message = f"{record.msg!r} {record.args!r}"
    clean = redact(message)
    if clean != message or not record.args:
        record.msg, record.args = clean, None
    if record.exc_info:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _redacting_factory(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """A log record factory that redacts what `make` (the factory before it) builds."""

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        _redact_record(record)
        return record

    factory.tobira_redacts = True  # type: ignore[attr-defined]
    return factory


def configure_logging(level: str) -> None:
    """Give the `tobira` logger a handler (once) and make every record of the process redacted."""
    logger = logging.getLogger("tobira")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    current = logging.getLogRecordFactory()
    if not getattr(current, "tobira_redacts", False):
        logging.setLogRecordFactory(_redacting_factory(current))
