"""The reports mailbox over IMAP (aioimaplib): listing new messages, reading them within
a byte bound, filing those understood.

- **Login** as the round trip logs in (:mod:`mail_exporter.imap_login`: the module's
  TLS, its login, OAuth2 tokens from the collector's own token broker).
- **New messages**: SELECT gives UIDVALIDITY; ``UID SEARCH UID n:* UNKEYWORD flag``
  lists the UIDs above the last one read (``n:*`` always names the newest message,
  even below ``n``: those are dropped) that are not flagged processed (which matters
  after a UIDVALIDITY change, when everything is read again), the oldest first.
- **Sizes before bodies**: ``UID FETCH (UID RFC822.SIZE INTERNALDATE)`` for the ones
  taken, then ``BODY.PEEK[]`` (which sets no \\Seen) only for those within
  ``max_message_bytes``, one at a time: a pass holds one message in memory.
- **Filing** only what was understood: ``UID MOVE`` into ``processed_mailbox`` (created
  when the server says it is missing) when the server offers MOVE, else
  ``UID STORE +FLAGS.SILENT (flag)``. Nothing is ever deleted or expunged, and messages
  refused or not understood are left as they are.

Every command is bounded by the module's ``timeout``; the pass as a whole by the
section's. A failure is a :class:`MailboxError` with what failed.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import email.utils
import logging
import re
import ssl
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
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_SIZE_ITEMS = re.compile(
    rb"\bUID (\d+)|\bRFC822\.SIZE (\d+)|\bINTERNALDATE \"([^\"]*)\"", re.IGNORECASE
)
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
                size = int(match.group(2))
            else:
                arrived = _internaldate(match.group(3))
        if uid is not None and size is not None:
            found.append(Listed(uid, size, arrived))
    return found


class ReportsMailbox:
    """One logged-in session on the reports mailbox; open it with :meth:`open`."""

    def __init__(self, protocol: Any, mailbox: str, seconds: float) -> None:
        self._protocol = protocol
        self.mailbox = mailbox
        self._seconds = seconds
        self.uidvalidity = 0

    @classmethod
    async def open(
        cls, address: Address, module: ModuleConfig, mailbox: str, memory: ProbeMemory
    ) -> ReportsMailbox:
        """Connect, secure, log in and select ``mailbox``."""
        protocol = aioimaplib.IMAP4ClientProtocol(asyncio.get_running_loop())
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
            if match:
                self.uidvalidity = int(match.group(1))
                return
        raise MailboxError(f"SELECT {self.mailbox!r}: the server sent no UIDVALIDITY")

    async def new_messages(self, after: int, flag: str, limit: int) -> list[Listed]:
        """The oldest ``limit`` messages above UID ``after`` not flagged ``flag``."""
        search = self._protocol.search(
            "UID", f"{after + 1}:*", "UNKEYWORD", flag, charset=None, by_uid=True
        )
        response = await self._command("UID SEARCH", search)
        words = b" ".join(bytes(line) for line in response.lines[:-1]).split()
        uids = sorted({int(word) for word in words if word.isdigit() and int(word) > after})
        found: list[Listed] = []
        for start in range(0, min(len(uids), limit), FETCH_BATCH):
            batch = uids[start : min(start + FETCH_BATCH, limit)]
            fetch = self._protocol.fetch(
                ",".join(map(str, batch)), "(UID RFC822.SIZE INTERNALDATE)", by_uid=True
            )
            found += listed((await self._command("UID FETCH", fetch)).lines)
        return sorted(found, key=lambda item: item.uid)

    async def body(self, uid: int) -> bytes | None:
        """The whole message ``uid`` as the server keeps it (without setting \\Seen); None
        when the server has it no more (expunged or moved since it was listed)."""
        fetch = self._protocol.fetch(str(uid), "(BODY.PEEK[])", by_uid=True)
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
            if response.result == "OK":
                return
            if not _TRYCREATE.search(response_text(response)):
                raise MailboxError(f"UID MOVE: {response.result} {response_text(response)}")
            await self._command("CREATE", self._protocol.simple_command("CREATE", target))
            await self._command("UID MOVE", self._protocol.move(uid_set, target, by_uid=True))
            return
        store = self._protocol.store(uid_set, "+FLAGS.SILENT", f"({flag})", by_uid=True)
        await self._command("UID STORE", store)

    async def close(self) -> None:
        await logout_and_close(self._protocol)
