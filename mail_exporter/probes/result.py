"""What a probe returns: its verdict, phase timings, failure reason, TLS facts and the
revocation checks' answers.

A probe never raises to its caller; everything it learned travels in a
:class:`ProbeResult`, which :mod:`mail_exporter.metrics` turns into metric
families and :mod:`mail_exporter.report` into a readable report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from mail_exporter.printable import printable
from mail_exporter.probes.revocation import Revocation
from mail_exporter.probes.tls_scan import TLSScan
from mail_exporter.tls_facts import TLSFacts

if TYPE_CHECKING:  # smtp_posture imports the session, and the session this module
    from mail_exporter.probes.smtp_posture import SMTPPosture


class Phase(StrEnum):
    """The steps of a mail session, in the order they usually happen."""

    RESOLVE = "resolve"
    CONNECT = "connect"
    TLS_HANDSHAKE = "tls_handshake"
    BANNER = "banner"
    CAPABILITIES = "capabilities"
    STARTTLS = "starttls"
    AUTH = "auth"
    POSTURE = "posture"
    MAILBOXES = "mailboxes"
    QUIT = "quit"


class FailureReason(StrEnum):
    """The bounded set of reasons a probe can fail for (label values)."""

    RESOLVE = "resolve"
    CONNECT = "connect"
    TIMEOUT = "timeout"
    TLS = "tls"
    BANNER = "banner"
    PROTOCOL = "protocol"
    STARTTLS_UNAVAILABLE = "starttls_unavailable"
    AUTH = "auth"
    REJECTED = "rejected"
    TOKEN = "token"
    """No OAuth2 access token for the login (:mod:`mail_exporter.oauth2`): the token
    source failed or did not answer in time; the server was not asked."""


@dataclass(frozen=True)
class Failure:
    """Where and why a probe stopped."""

    phase: Phase
    reason: FailureReason
    detail: str


@dataclass
class MailboxStats:
    """What an IMAP probe read of one configured mailbox; None where the server cannot say
    (no STATUS=SIZE, no QUOTA, an empty mailbox has no first or last message)."""

    name: str
    kind: str | None = None
    newest_max_age: float | None = None
    """The configured expectation, in seconds (``newest_max_age``)."""
    messages: int | None = None
    unseen: int | None = None
    size_bytes: int | None = None
    oldest: float | None = None
    """INTERNALDATE of the first message by UID (the earliest arrival), Unix time."""
    newest: float | None = None
    """INTERNALDATE of the last message by UID (the latest arrival), Unix time."""
    quota: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Usage and limit by resource: ``storage_bytes`` (STORAGE, KiB on the wire) and
    ``messages`` (MESSAGE); of several quota roots, the fullest."""


class SessionLog:
    """A probe's session log, read as its lines (``  12.3ms capabilities  S: 250 ok``).

    Entries are kept as they come, the time since the session began, the step and the
    message, and written out as lines only when read (the report of ``probe`` and of a
    debug /probe): nearly every probe's log is never read, and formatting its thirty-odd
    entries as they came sat on the probe's path (docs/benchmarks.md, section 2).
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[tuple[float, str, str]] = []

    def add(self, elapsed: float, step: str, message: str) -> None:
        """An entry ``elapsed`` seconds into the session; the message is escaped when read."""
        self._entries.append((elapsed, step, message))

    def __iter__(self) -> Iterator[str]:
        for elapsed, step, message in self._entries:
            yield f"{elapsed * 1000:8.1f}ms {step:<13} {printable(message, None)}"

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionLog) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as a list

    def __repr__(self) -> str:
        return repr(list(self))


@dataclass
class ProbeResult:
    """Everything one probe learned; built up by the session, frozen by the runner."""

    protocol: str
    success: bool = False
    duration_seconds: float = 0.0
    phases: dict[Phase, float] = field(default_factory=dict)
    failure: Failure | None = None
    tls: TLSFacts | None = None
    starttls_offered: bool | None = None
    plaintext_auth_offered: bool | None = None
    peer_address: str | None = None
    log: SessionLog = field(default_factory=SessionLog)
    smtp_posture: SMTPPosture | None = None
    revocation: Revocation | None = None
    tls_scan: TLSScan | None = None
    """The module's latest TLS scan (``tls_scan``): made by this probe, or kept from an
    earlier one for the module's interval."""
    auth_mechanism: str | None = None
    """How the probe logged in, once the server accepted it: a SASL mechanism (``plain``,
    ``login``, ``xoauth2``, ``oauthbearer``; IMAP's LOGIN command is ``login``) or POP3's
    USER/PASS (``user``); None without a login."""
    mailboxes: list[MailboxStats] = field(default_factory=list)
    """The configured mailboxes the server answered for (``imap.mailboxes``), in order;
    one it refused (it does not exist) is not here, but in the log."""
