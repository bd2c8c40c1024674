"""Reject reasons and SMTP stages as bounded classes, shared by the Postfix and Exim parsers.

A reject's reply text is matched against these substrings in order; the first match
names the class. The order matters: an RBL reply that also says "Client host rejected"
is ``rbl``, a milter's spam verdict is ``spam`` rather than ``milter``.

The same reply text comes again and again, so classes are cached by reply; only
replies of at most ``MAX_CACHED_REPLY_CHARS`` are, so that the cache holds at most
4096 of them (2 MB of text), however long the replies a client provokes.
"""

from __future__ import annotations

import functools

REASONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rbl", ("blocked using", "is listed in", "listed at", "dnsbl", "rbl", "blacklisted",
             "blocklisted", "spamhaus")),
    ("malware", ("virus", "malware", "infected")),
    ("spam", ("spam",)),
    ("greylist", ("greylist", "try again later", "graylist")),
    ("relay_denied", ("relay access denied", "relay not permitted", "relaying denied")),
    ("unknown_user", ("user unknown", "unknown user", "user doesn't exist", "no such user",
                      "mailbox unavailable", "unrouteable address", "recipient unknown",
                      "5.1.1")),
    ("helo", ("helo command rejected", "helo ", "ehlo ", "syntactically invalid argument")),
    ("sender", ("sender address rejected", "sender verify fail", "sender verification failed")),
    ("client", ("client host rejected", "cannot find your", "reverse hostname",
                "no host name found")),
    ("recipient", ("recipient address rejected", "recipient verify fail")),
    ("rate_limit", ("too many", "rate limit", "too much")),
    ("size", ("size exceeds", "message size", "too big", "message too large")),
    ("tls", ("starttls", "must issue a", "encryption required")),
    ("content", ("message content rejected", "content rejected", "header ", "body ")),
)  # fmt: skip
"""(class, lower-case substrings). ``milter`` and ``other`` are the fallbacks."""

STAGES = frozenset(
    ("CONNECT", "HELO", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT",
     "END-OF-MESSAGE", "VRFY", "ETRN", "RSET", "NOOP", "QUIT", "UNKNOWN", "header", "body")
)  # fmt: skip
"""SMTP stages as Postfix logs them (``header``/``body``: cleanup's content checks)."""


MAX_CACHED_REPLY_CHARS = 512
"""Real replies are a line of at most a few hundred characters (RFC 5321: 512 octets)."""


def _classify(reply: str, milter: bool) -> str:
    text = reply.lower()
    for reason, needles in REASONS:
        if any(needle in text for needle in needles):
            return reason
    return "milter" if milter else "other"


_cached_classify = functools.lru_cache(maxsize=4096)(_classify)


def reject_reason(reply: str, milter: bool = False) -> str:
    """The class of a reject, from its reply text (without the envelope that follows)."""
    if len(reply) > MAX_CACHED_REPLY_CHARS:
        return _classify(reply, milter)
    return _cached_classify(reply, milter)


def stage(word: str) -> str:
    """An SMTP command or stage word as a bounded label."""
    return word if word in STAGES else "other"
