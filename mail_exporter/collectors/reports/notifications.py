"""Notification rules over a read message: which rules it matches, and with which status.

A rule matches when every pattern it gives matches (``re.search``, case-insensitive):
``from`` the From: header, ``subject`` the Subject:, ``body`` the body text (the first
64 KiB :mod:`.message` keeps). Its status is the first of its ``statuses`` (in the
order written) whose pattern matches the subject or the body, else ``unknown``. Every
rule a message matches counts it.

The message's time is its Date: header, or the server's arrival time when it has none
or a later one (a sender's clock ahead cannot push the newest time into the future).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from mail_exporter.collectors.reports.config import UNKNOWN_STATUS, NotificationRule
from mail_exporter.collectors.reports.message import MessageContents


def _compiled(pattern: str | None) -> re.Pattern[str] | None:
    return None if pattern is None else re.compile(pattern, re.IGNORECASE)


@dataclass(frozen=True)
class CompiledRule:
    name: str
    sender: re.Pattern[str] | None
    subject: re.Pattern[str] | None
    body: re.Pattern[str] | None
    statuses: tuple[tuple[str, re.Pattern[str]], ...]

    @classmethod
    def of(cls, rule: NotificationRule) -> CompiledRule:
        statuses = tuple((name, re.compile(text, re.I)) for name, text in rule.statuses.items())
        sender, subject, body = (_compiled(p) for p in (rule.from_, rule.subject, rule.body))
        return cls(rule.name, sender, subject, body, statuses)

    def matches(self, message: MessageContents) -> bool:
        return all(
            pattern is None or pattern.search(text) is not None
            for pattern, text in (
                (self.sender, message.sender),
                (self.subject, message.subject),
                (self.body, message.body),
            )
        )

    def status(self, message: MessageContents) -> str:
        for status, pattern in self.statuses:
            if pattern.search(message.subject) or pattern.search(message.body):
                return status
        return UNKNOWN_STATUS


def matched(rules: tuple[CompiledRule, ...], message: MessageContents) -> Iterator[tuple[str, str]]:
    """(rule, status) of every rule ``message`` matches."""
    for rule in rules:
        if rule.matches(message):
            yield rule.name, rule.status(message)


def message_time(message: MessageContents, arrived: float | None, now: float) -> float:
    """When the message was sent, as far as it can be told (see above)."""
    known = [time for time in (message.date, arrived) if time is not None]
    return min(known) if known else now
