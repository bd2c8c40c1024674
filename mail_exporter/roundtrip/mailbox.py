"""What the runner needs from a mailbox, whichever protocol reads it.

:mod:`~mail_exporter.roundtrip.imap_mailbox`, :mod:`~mail_exporter.roundtrip.pop3_mailbox`
and :mod:`~mail_exporter.roundtrip.graph` implement :class:`Mailbox`. Every method
raises :class:`~mail_exporter.roundtrip.outcome.RoundTripFailure` (stage ``receive``, or
``cleanup`` from :meth:`Mailbox.delete`) and bounds each network wait by the receive
module's (or Graph leg's) ``timeout``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mail_exporter.roundtrip.message import TaggedMessage


@dataclass(frozen=True)
class Found:
    """One of our messages in a mailbox."""

    folder: str
    """The IMAP mailbox it is in (POP3: the maildrop, ``INBOX``; Graph: the folder)."""
    uid: str
    """IMAP UID, POP3 UIDL or Graph message id: deletion goes by this, never by sequence
    number alone."""
    message: TaggedMessage
    seen: float
    """``time.monotonic()`` when it was seen: the IDLE notification, or the search's answer."""
    junk: bool = False
    """Found in the junk mailbox."""


class Mailbox(Protocol):
    """A logged-in mailbox session for one round-trip attempt."""

    async def find(self, token: str) -> Found | None:
        """Look for the message with ``token`` now (and in the junk mailbox, if any)."""

    async def wait(self, seconds: float) -> None:
        """Return when new mail may have arrived, or after ``seconds``."""

    async def tagged(self, route: str) -> list[Found]:
        """Every message of ``route`` in the mailbox (and junk mailbox), for the cleanup."""

    async def delete(self, messages: Sequence[Found]) -> None:
        """Delete exactly these messages and nothing else."""

    async def close(self) -> None:
        """Log out; never raises, returns within a few seconds."""
