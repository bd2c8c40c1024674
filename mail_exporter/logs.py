"""The exporter's own logs: logfmt or JSON lines on stderr, with secrets redacted.

Passwords never go into log calls; as a second line of defence the handler
replaces every configured secret with ``<redacted>`` wherever it might appear.

That rewriting stays, although it rewrites servers' words too (a failure's detail), which
made the same rewriting of /probe's debug output a password oracle (see
:mod:`mail_exporter.web`). The log is no oracle to a stranger: it goes to stderr, to the
service manager and whoever reads the host's logs, and no endpoint serves it. And it is
where libraries' texts about what they sent end up: aioimaplib quotes a pending command,
arguments and all, in its protocol errors, which asyncio logs with their traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable

LEVELS = ("debug", "info", "warn", "error")
_LEVEL_NAMES = {"WARNING": "warn", "CRITICAL": "error"}


class RedactingFilter(logging.Filter):
    """Replaces known secrets in the rendered message: the configured ones, and those the
    running exporter learns (OAuth2 access tokens, rotated refresh tokens), asked for at
    each record."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.learned: Callable[[], Iterable[str]] = tuple

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = (*self.secrets, *(s for s in self.learned() if s))
        if secrets:
            record.msg, record.args = _redacted(record.getMessage(), secrets), None
            if record.exc_info:  # a library's exception text may quote what it sent
                text = logging.Formatter().formatException(record.exc_info)
                record.exc_text = _redacted(text, secrets)
                record.exc_info = None
        return True


def _redacted(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


def _fields(record: logging.LogRecord) -> dict[str, str]:
    fields = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": _LEVEL_NAMES.get(record.levelname, record.levelname.lower()),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    if record.exc_info:
        fields["error"] = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        fields["error"] = record.exc_text
    return fields


def _logfmt_value(value: str) -> str:
    """``value`` bare when it is plain, else quoted with every character that could end or
    forge a line escaped: JSON escapes control characters but not U+0085 (NEL) or the
    Unicode line and paragraph separators, which some log readers break lines at."""
    if value and all(c.isprintable() and c not in ' ="\\' for c in value):
        return value
    quoted = json.dumps(value, ensure_ascii=False)
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in quoted)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False)


_redactor = RedactingFilter()


def setup_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else LogfmtFormatter())
    handler.addFilter(_redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("WARNING" if level == "warn" else level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def redact(secrets: Iterable[str]) -> None:
    """Tell the log handler which strings must never be printed."""
    _redactor.secrets = tuple(s for s in secrets if s)


def redact_learned(secrets: Callable[[], Iterable[str]]) -> None:
    """Tell the log handler where to ask for the secrets learned while running."""
    _redactor.learned = secrets
