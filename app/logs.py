"""Logging: tobira's own logger, and a filter that keeps secrets in URLs out of the access log.

tobira's own log lines never contain a token, a session id or a cookie by construction. The access log is
uvicorn's: it prints each request's path with its query, and `/callback?session=…` (and the legacy and
OAuth callbacks' `token=`/`code=`) carry one-shot secrets there. The filter redacts those values, so an
operator who leaves access logs on does not leak them.
"""

from __future__ import annotations

import logging
import re

SECRET_QUERY = re.compile(r"([?&](?:session|token|code|state|i)=)[^&#\s]*", re.IGNORECASE)


class RedactQuery(logging.Filter):
    """Redacts secret query parameters in uvicorn's access log records (and any tobira record args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                SECRET_QUERY.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def configure_logging(level: str) -> None:
    """Give the `tobira` logger a handler (once) and protect the access log."""
    logger = logging.getLogger("tobira")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())
