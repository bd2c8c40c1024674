"""The mailbox checks of an IMAP probe (``imap: {mailboxes: [...]}``), after the login.

Per mailbox, four commands at most, whatever its size:

- ``STATUS name (MESSAGES UNSEEN SIZE)``, SIZE only where CAPABILITY lists STATUS=SIZE
  (RFC 8438);
- ``EXAMINE name`` (read-only: nothing is marked seen), whose ``EXISTS`` says how many
  messages there are;
- the first and last message's INTERNALDATE: with ESEARCH (RFC 4731) ``UID SEARCH RETURN
  (MIN MAX) ALL`` then ``UID FETCH min,max (INTERNALDATE)``, else ``FETCH 1,EXISTS
  (INTERNALDATE)`` by sequence number; never a range over the whole mailbox. The first and
  last by UID are the earliest and latest arrivals (a message APPENDed with an old date
  sorts by when it was appended);
- ``GETQUOTAROOT name`` where QUOTA is offered (RFC 2087 and RFC 9208 answer alike):
  STORAGE (KiB, exported in bytes) and MESSAGE; of several roots, the fullest.

A mailbox the server refuses (``NO``/``BAD``: it does not exist, or no right to it) is a line
in the session log and no series, never a failed probe; so is a STATUS item or a date the
server leaves out. A reply that breaks the protocol fails the probe as anywhere else. The
replies are parsed from single lines already bounded by the session (line length, lines per
reply); configured names need no literal (see :class:`~mail_exporter.config.probes.
MailboxCheck`), and a server reply that sends one is a protocol error. Time counts into the
``mailboxes`` phase, within the probe's deadline.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Awaitable, Callable
from typing import Final

from mail_exporter.config.probes import MailboxCheck
from mail_exporter.printable import printable
from mail_exporter.probes.result import FailureReason, MailboxStats, Phase
from mail_exporter.probes.session import ProbeFailure, Session

Command = Callable[[str], Awaitable[list[str]]]
"""Sends a tagged IMAP command: the untagged lines on OK; ProbeFailure(REJECTED) on NO/BAD."""

Token = str | list["Token"]

_TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()"]+')
_MAX_DEPTH: Final = 8
_NUMBER = re.compile(r"\d{1,19}")
_INTERNALDATE = re.compile(
    r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)
_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
QUOTA_RESOURCES: Final = {"STORAGE": ("storage_bytes", 1024), "MESSAGE": ("messages", 1)}
"""The quota resources exported: the label value and the factor to base units."""


def tokens(line: str) -> list[Token]:
    """An untagged response as atoms, unescaped quoted strings and nested lists."""
    if line.endswith("}"):
        raise ProbeFailure(FailureReason.PROTOCOL, f"unexpected literal in {printable(line)!r}")
    stack: list[list[Token]] = [[]]
    for match in _TOKEN.finditer(line):
        token = match.group()
        if token == "(":
            if len(stack) > _MAX_DEPTH:
                raise ProbeFailure(FailureReason.PROTOCOL, "response nested too deeply")
            stack.append([])
        elif token == ")":
            if len(stack) == 1:
                raise ProbeFailure(FailureReason.PROTOCOL, f"unbalanced {printable(line)!r}")
            inner = stack.pop()
            stack[-1].append(inner)
        elif token.startswith('"'):
            stack[-1].append(re.sub(r"\\(.)", r"\1", token[1:-1]))
        else:
            stack[-1].append(token)
    return stack[0]


def _number(token: Token) -> int | None:
    return int(token) if isinstance(token, str) and _NUMBER.fullmatch(token) else None


def _pairs(items: list[Token]) -> dict[str, Token]:
    """``(KEY value KEY value …)`` as a dict with upper-case keys."""
    return {
        key.upper(): value
        for key, value in zip(items[::2], items[1::2], strict=False)
        if isinstance(key, str)
    }


def internal_date(text: str) -> float | None:
    """An INTERNALDATE (``17-Jul-1996 02:44:25 -0700``) as Unix time; None if malformed."""
    match = _INTERNALDATE.fullmatch(text)
    if match is None or match.group(2).lower() not in _MONTHS:
        return None
    day, _, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
    offset = (int(zone_hours) * 60 + int(zone_minutes)) * 60
    try:
        zone = datetime.timezone(datetime.timedelta(seconds=offset if sign == "+" else -offset))
        moment = datetime.datetime(
            int(year), _MONTHS[match.group(2).lower()], int(day),
            int(hour), int(minute), int(second), tzinfo=zone,
        )  # fmt: skip
    except ValueError:  # 31 February, 25 o'clock, a zone of a day or more
        return None
    return moment.timestamp()


def _quoted(name: str) -> str:
    return f'"{name}"'  # the config allows no quote or backslash in a name


def _untagged(lines: list[str], keyword: str) -> list[list[Token]]:
    """The parsed untagged responses whose first token is ``keyword``."""
    found = []
    for line in lines:
        head = line.split(" ", 1)[0].upper()
        if head == keyword:
            found.append(tokens(line))
    return found


async def _status(command: Command, stats: MailboxStats, size: bool) -> None:
    items = "MESSAGES UNSEEN SIZE" if size else "MESSAGES UNSEEN"
    for response in _untagged(await command(f"STATUS {_quoted(stats.name)} ({items})"), "STATUS"):
        values = _pairs(response[-1]) if response and isinstance(response[-1], list) else {}
        stats.messages = _number(values.get("MESSAGES", ""))
        stats.unseen = _number(values.get("UNSEEN", ""))
        stats.size_bytes = _number(values.get("SIZE", "")) if size else None


async def _ends(command: Command, stats: MailboxStats, esearch: bool) -> None:
    """EXAMINE, then the INTERNALDATE of the first and the last message."""
    exists = None
    for line in await command(f"EXAMINE {_quoted(stats.name)}"):
        count, _, word = line.partition(" ")
        if word.upper() == "EXISTS":
            exists = _number(count)
    if not exists:
        return
    if esearch:
        found = _untagged(await command("UID SEARCH RETURN (MIN MAX) ALL"), "ESEARCH")
        atoms: list[Token] = [t for t in found[0][1:] if isinstance(t, str)] if found else []
        values = _pairs(atoms[1:] if atoms[:1] == ["UID"] else atoms)
        first, last = _number(values.get("MIN", "")), _number(values.get("MAX", ""))
        if first is None or last is None:
            return
        fetch, key = f"UID FETCH {first},{last} (INTERNALDATE)", "UID"
    else:
        first, last = 1, exists
        fetch, key = f"FETCH 1,{exists} (INTERNALDATE)", ""
    dates: dict[int, float | None] = {}
    for line in await command(fetch):
        parts = tokens(line)
        if len(parts) == 3 and isinstance(parts[1], str) and parts[1].upper() == "FETCH":
            items = _pairs(parts[2]) if isinstance(parts[2], list) else {}
            number = _number(items.get(key, "")) if key else _number(parts[0])
            date = items.get("INTERNALDATE")
            if number is not None and isinstance(date, str):
                dates[number] = internal_date(date)
    stats.oldest, stats.newest = dates.get(first), dates.get(last)


async def _quota(command: Command, stats: MailboxStats) -> None:
    """GETQUOTAROOT: usage and limit of STORAGE and MESSAGE, from the fullest root."""
    for response in _untagged(await command(f"GETQUOTAROOT {_quoted(stats.name)}"), "QUOTA"):
        resources = response[2] if len(response) == 3 and isinstance(response[2], list) else []
        for at in range(0, len(resources) - 2, 3):
            name, usage, limit = resources[at : at + 3]
            kind = QUOTA_RESOURCES.get(name.upper()) if isinstance(name, str) else None
            used, most = _number(usage), _number(limit)
            if kind is None or used is None or most is None or most == 0:
                continue
            label, factor = kind
            known = stats.quota.get(label)
            if known is None or used / most > known[0] / known[1]:
                stats.quota[label] = (used * factor, most * factor)


async def check_mailboxes(
    session: Session, command: Command, mailboxes: list[MailboxCheck], capabilities: set[str]
) -> None:
    """Read each configured mailbox into the session's result (see the module docstring)."""
    size = "STATUS=SIZE" in capabilities
    esearch = "ESEARCH" in capabilities
    quota = "QUOTA" in capabilities or any(c.startswith("QUOTA=RES-") for c in capabilities)
    with session.timed(Phase.MAILBOXES):
        for mailbox in mailboxes:
            stats = MailboxStats(mailbox.name, mailbox.kind, mailbox.newest_max_age)
            try:
                await _status(command, stats, size)
            except ProbeFailure as refused:
                _refused(session, refused, f"mailbox {mailbox.name!r} skipped")
                continue
            session.result.mailboxes.append(stats)
            try:
                await _ends(command, stats, esearch)
                if quota:
                    await _quota(command, stats)
            except ProbeFailure as refused:
                _refused(session, refused, f"mailbox {mailbox.name!r} partly read")


def _refused(session: Session, failure: ProbeFailure, what: str) -> None:
    """Log a refused mailbox command; any other failure stops the probe."""
    if failure.reason is not FailureReason.REJECTED:
        raise failure
    session.log(f"{what}: {failure.detail}")
