"""The reports mailbox over IMAP (aioimaplib): listing new messages, reading them within
a byte bound, filing those understood.

- **Login** as the round trip logs in (:mod:`mail_exporter.imap_login`: the module's
  TLS, its login, OAuth2 tokens from the collector's own token broker), on its bounded
  protocol: a literal over ``max_message_bytes`` + 1, a line over 8 MiB or an answer
  over its byte and line bounds ends the session with what the server did.
- **New messages**: SELECT gives UIDVALIDITY; ``UID SEARCH UID n:* UNKEYWORD flag``
  lists the UIDs above the last one read (``n:*`` always names the newest message,
  even below ``n``: those are dropped) that are not flagged processed (which matters
  after a UIDVALIDITY change, when the mailbox is read again, ``SINCE`` the day
  :mod:`.state` says), the oldest first. The
  answer is read number by number keeping only the ``limit`` smallest UIDs, each once
  and within 32 bits, so that a million UIDs cost no more than the line. A longer
  answer (over some million messages not filed) is over the protocol's line bound and
  fails the pass with that reason: no real reports mailbox holds so many, and the
  user can move messages away.
- **Sizes before bodies**: ``UID FETCH (UID RFC822.SIZE INTERNALDATE)`` for the ones
  taken (what the server says of UIDs not asked is dropped), then
  ``BODY.PEEK[]<0.N>`` (which sets no \\Seen) only for those within
  ``max_message_bytes``, one at a time: a pass holds one message in memory. N is
  ``max_message_bytes`` + 1: a server that announced a small size and sends more gets
  the message refused as too large, and cannot make the collector read more than N.
  UIDs searched but not described by the FETCH are gone (or the server is broken):
  reading goes on past them.
- **Filing** only what was understood: ``UID MOVE`` into ``processed_mailbox`` (created
  when the server says it is missing) when the server offers MOVE, else
  ``UID STORE +FLAGS.SILENT (flag)``. A MOVE answered OK is checked with
  ``UID SEARCH``: messages the server kept get the flag, so that no later pass (after a
  UIDVALIDITY change) reads them again. Nothing is ever deleted or expunged, and
  messages refused or not understood are left as they are.

Every command is bounded by the module's ``timeout``; the pass as a whole by the
section's. A failure is a :class:`MailboxError` with what failed.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import email.utils
import heapq
import logging
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aioimaplib

from mail_exporter import imap_login
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.imap_login import ImapLoginFailure, logout_and_close, response_text
from mail_exporter.printable import printable
from mail_exporter.probes import ProbeMemory
from mail_exporter.targets import Address

logger = logging.getLogger(__name__)

FETCH_BATCH = 100
"""UIDs per size FETCH, so that no command line grows with the mailbox."""
MAX_UID = 2**32 - 1
"""UIDs and UIDVALIDITY are 32-bit numbers (RFC 3501); longer digit runs are no number."""
_NUMBER = rb"(?<![0-9])([0-9]{1,10})(?![0-9])"
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY " + _NUMBER + rb"\]", re.IGNORECASE)
_SEARCH_NUMBER = re.compile(_NUMBER)
_SIZE_ITEMS = re.compile(
    rb"\bUID " + _NUMBER + rb"|\bRFC822\.SIZE ([0-9]+)|\bINTERNALDATE \"([^\"]*)\"",
    re.IGNORECASE,
)
_HUGE = 1 << 62
"""The size of a message whose announced size has more digits than any real size."""
_TRYCREATE = re.compile(r"\[TRYCREATE\]", re.IGNORECASE)


class MailboxError(Exception):
    """The mailbox could not be read or filed; the message says what failed."""


@dataclass(frozen=True)
class Listed:
    """A message found new: its UID, size and the server's arrival time (epoch seconds)."""

    uid: int
    size: int
    arrived: float | None


def _internaldate(text: bytes) -> float | None:
    """``06-Dec-2026 19:00:00 +0000`` as epoch seconds (None when unreadable)."""
    try:
        day, month, rest = text.decode("ascii").strip().split("-", 2)
        parsed = email.utils.parsedate_tz(f"{day} {month} {rest}")
    except (UnicodeDecodeError, ValueError):
        return None
    if parsed is None:
        return None
    offset = parsed[9] or 0
    return float(calendar.timegm(parsed[:6] + (0, 1, -1))) - offset


def listed(lines: Sequence[bytes | bytearray]) -> list[Listed]:
    """The UID, RFC822.SIZE and INTERNALDATE of each message of a FETCH answer."""
    found = []
    for line in lines:
        uid = size = None
        arrived = None
        for match in _SIZE_ITEMS.finditer(bytes(line)):
            if match.group(1):
                uid = int(match.group(1))
            elif match.group(2):
                digits = match.group(2)
                size = int(digits) if len(digits) <= 18 else _HUGE
            else:
                arrived = _internaldate(match.group(3))
        if uid is not None and size is not None:
            found.append(Listed(uid, size, arrived))
    return found


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imap_date(epoch: float) -> str:
    """The day of ``epoch`` (UTC) as IMAP's SEARCH writes dates: ``5-Dec-2026``."""
    day = time.gmtime(max(0.0, epoch))
    return f"{day.tm_mday}-{_MONTHS[day.tm_mon - 1]}-{day.tm_year}"


def search_uids(lines: Sequence[bytes | bytearray], after: int, limit: int) -> list[int]:
    """The ``limit`` smallest distinct UIDs above ``after`` of a SEARCH answer, ascending
    (aioimaplib hands a SEARCH only the text of its untagged SEARCH lines, and the
    tagged completion last, whose text is no UID)."""
    largest: list[int] = []  # a heap of the kept UIDs, negated: the largest kept first
    kept: set[int] = set()
    for line in lines[:-1]:
        for match in _SEARCH_NUMBER.finditer(line):
            uid = int(match.group(1))
            if uid <= after or uid > MAX_UID or uid in kept:
                continue
            if len(largest) < limit:
                heapq.heappush(largest, -uid)
            elif uid < -largest[0]:
                kept.discard(-heapq.heapreplace(largest, -uid))
            else:
                continue
            kept.add(uid)
    return sorted(kept)


class ReportsMailbox:
    """One logged-in session on the reports mailbox; open it with :meth:`open`."""

    def __init__(self, protocol: Any, mailbox: str, seconds: float) -> None:
        self._protocol = protocol
        self.mailbox = mailbox
        self._seconds = seconds
        self.uidvalidity = 0

    @classmethod
    async def open(
        cls,
        address: Address,
        module: ModuleConfig,
        mailbox: str,
        memory: ProbeMemory,
        max_message_bytes: int,
    ) -> ReportsMailbox:
        """Connect, secure, log in and select ``mailbox``; a message is read up to
        ``max_message_bytes`` + 1 bytes (one more: over the bound)."""
        literal = max_message_bytes + 1
        protocol = imap_login.BoundedProtocol(
            asyncio.get_running_loop(),
            max_literal=literal,
            max_response=max(imap_login.MAX_RESPONSE_BYTES, literal + imap_login.MAX_LINE_BYTES),
        )
        session = cls(protocol, mailbox, module.timeout_seconds)
        try:
            async with session._bounded("connect"):
                await imap_login.connect(protocol, address, module)
            assert module.auth is not None  # the config requires a login
            async with session._bounded("login"):
                await imap_login.login(protocol, module.auth, address, memory, session._seconds)
            await session._select()
        except ImapLoginFailure as failure:
            await session.close()
            raise MailboxError(failure.detail) from None
        except BaseException:
            await session.close()
            raise
        return session

    @contextlib.asynccontextmanager
    async def _bounded(self, what: str) -> Any:
        """Bound a step by the module's timeout; connection errors become MailboxError."""
        try:
            async with asyncio.timeout(self._seconds):
                yield
        except TimeoutError:
            raise MailboxError(f"{what}: no answer within {self._seconds:.3g}s") from None
        except (OSError, ssl.SSLError, EOFError, aioimaplib.AioImapException) as error:
            detail = printable(str(error) or repr(error))
            raise MailboxError(f"{what}: {detail}") from None

    async def _command(self, what: str, command: Any) -> Any:
        """The OK response of an aioimaplib command, or MailboxError."""
        async with self._bounded(what):
            if not imap_login.connection_open(self._protocol):
                raise MailboxError(f"{what}: connection lost")
            response = await command
        if response.result != "OK":
            raise MailboxError(f"{what}: {response.result} {response_text(response)}")
        return response

    async def _select(self) -> None:
        response = await self._command(
            f"SELECT {self.mailbox!r}", self._protocol.select(aioimaplib.quoted(self.mailbox))
        )
        for line in response.lines:
            match = _UIDVALIDITY.search(bytes(line))
            if match and 0 < int(match.group(1)) <= MAX_UID:
                self.uidvalidity = int(match.group(1))
                return
        raise MailboxError(f"SELECT {self.mailbox!r}: the server sent no UIDVALIDITY")

    async def new_messages(
        self, after: int, flag: str, limit: int, since: float | None = None
    ) -> tuple[list[Listed], int]:
        """The oldest ``limit`` messages above UID ``after`` not flagged ``flag`` (that
        arrived on the day of ``since`` or later, when given), and the highest UID taken
        (``after`` when none): the next pass starts above it."""
        if after >= MAX_UID:
            return [], after
        criteria = ["UID", f"{after + 1}:*", "UNKEYWORD", flag]
        if since is not None:
            criteria += ["SINCE", imap_date(since)]
        search = self._protocol.search(*criteria, charset=None, by_uid=True)
        response = await self._command("UID SEARCH", search)
        uids = search_uids(response.lines, after, limit)
        found: dict[int, Listed] = {}
        for start in range(0, len(uids), FETCH_BATCH):
            batch = uids[start : start + FETCH_BATCH]
            fetch = self._protocol.fetch(
                ",".join(map(str, batch)), "(UID RFC822.SIZE INTERNALDATE)", by_uid=True
            )
            asked = set(batch)
            for item in listed((await self._command("UID FETCH", fetch)).lines):
                if item.uid in asked:
                    found.setdefault(item.uid, item)
        return sorted(found.values(), key=lambda item: item.uid), max(uids, default=after)

    async def body(self, uid: int, limit: int) -> bytes | None:
        """The message ``uid`` as the server keeps it (without setting \\Seen), its first
        ``limit`` bytes at most; None when the server has it no more (expunged or moved
        since it was listed)."""
        fetch = self._protocol.fetch(str(uid), f"(BODY.PEEK[]<0.{limit}>)", by_uid=True)
        response = await self._command("UID FETCH BODY", fetch)
        for line in response.lines:
            if isinstance(line, bytearray):
                return bytes(line)
        return None

    @property
    def can_move(self) -> bool:
        return "MOVE" in imap_login.capabilities(self._protocol)

    async def file(self, uids: Sequence[int], processed_mailbox: str | None, flag: str) -> None:
        """Move ``uids`` into ``processed_mailbox`` (where MOVE is offered), else flag them."""
        if not uids:
            return
        uid_set = ",".join(map(str, uids))
        if processed_mailbox is not None and self.can_move:
            target = aioimaplib.quoted(processed_mailbox)
            move = self._protocol.move(uid_set, target, by_uid=True)
            async with self._bounded("UID MOVE"):
                response = await move
            if response.result != "OK":
                if not _TRYCREATE.search(response_text(response)):
                    raise MailboxError(f"UID MOVE: {response.result} {response_text(response)}")
                await self._command("CREATE", self._protocol.simple_command("CREATE", target))
                await self._command("UID MOVE", self._protocol.move(uid_set, target, by_uid=True))
            kept = await self._kept(uids)
            if not kept:
                return
            logger.warning(
                "reports mailbox: the server answered OK to UID MOVE but kept %d of %d"
                " messages; flagging them %s instead",
                len(kept),
                len(uids),
                flag,
            )
            uid_set = ",".join(map(str, kept))
        store = self._protocol.store(uid_set, "+FLAGS.SILENT", f"({flag})", by_uid=True)
        await self._command("UID STORE", store)

    async def _kept(self, uids: Sequence[int]) -> list[int]:
        """Which of ``uids`` are still in the mailbox."""
        uid_set = ",".join(map(str, uids))
        search = self._protocol.search("UID", uid_set, charset=None, by_uid=True)
        asked = set(uids)
        found = search_uids((await self._command("UID SEARCH", search)).lines, 0, len(uids))
        return [uid for uid in found if uid in asked]

    async def close(self) -> None:
        await logout_and_close(self._protocol)
