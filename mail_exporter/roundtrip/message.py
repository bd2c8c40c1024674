"""The round trip's test message: how it is tagged, how a tag is read back, and hop delays.

Every message carries a random UUID in ``X-Mail-Exporter-Token`` and in its Message-ID,
the route name in ``X-Mail-Exporter-Route`` and the send time (Unix seconds, microsecond
precision) in ``X-Mail-Exporter-Sent``. ``Auto-Submitted: auto-generated`` (RFC 3834) and
``X-Auto-Response-Suppress`` keep vacation responders and Exchange from answering it.

Hop delays come from the ``Received`` headers, oldest first: hop 1 is the first server's
stamp minus the send time, hop 2 the second stamp minus the first, and so on. Stamps have
whole seconds and hosts' clocks differ, so a negative delay is reported as 0 and the next
hop is measured from the later of the two times. Hops past ``MAX_HOPS`` are added to the
last one, which keeps the ``hop`` label bounded; a header whose date cannot be read is
skipped.
"""

from __future__ import annotations

import email.utils
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser

TOKEN_HEADER = "X-Mail-Exporter-Token"
ROUTE_HEADER = "X-Mail-Exporter-Route"
SENT_HEADER = "X-Mail-Exporter-Sent"
HEADER_FIELDS = (TOKEN_HEADER, ROUTE_HEADER, SENT_HEADER, "Received")
"""The header fields read back from a mailbox; nothing else of a message is fetched."""
MAX_HOPS = 5

_BODY = (
    "This is a test message of mail_exporter's round trip {route!r}.\n"
    "It measures how long mail takes to arrive and is deleted as soon as it is seen.\n"
)


def new_token() -> str:
    return str(uuid.uuid4())


def build_message(route: str, sender: str, recipient: str, token: str, sent: float) -> EmailMessage:
    """The tagged test message for one attempt, sent at Unix time ``sent``."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = f"mail_exporter round trip {route}"
    message["Date"] = email.utils.formatdate(sent, usegmt=True)
    message["Message-ID"] = f"<{token}@{sender.rpartition('@')[2]}>"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message[TOKEN_HEADER] = token
    message[ROUTE_HEADER] = route
    message[SENT_HEADER] = f"{sent:.6f}"
    message.set_content(_BODY.format(route=route))
    return message


@dataclass(frozen=True)
class TaggedMessage:
    """What a message found in a mailbox says about itself."""

    token: str
    route: str
    sent: float | None
    received: tuple[str, ...]
    """``Received`` header values, newest first, as they stand in the message."""


def parse_tagged(header_block: bytes) -> TaggedMessage | None:
    """Read our headers from a message's header block; ``None`` unless it has a token."""
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(header_block)
    token = str(headers.get(TOKEN_HEADER, "")).strip()
    if not token:
        return None
    try:
        sent: float | None = float(str(headers.get(SENT_HEADER, "")).strip())
    except ValueError:
        sent = None
    received = tuple(str(value) for value in headers.get_all("Received") or ())
    return TaggedMessage(token, str(headers.get(ROUTE_HEADER, "")).strip(), sent, received)


def _stamp(received: str) -> float | None:
    """The date after the last ``;`` of a Received header, as Unix time."""
    _, separator, date = received.rpartition(";")
    if not separator:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(date.strip())
    except (ValueError, TypeError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, with no claim about the local zone
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def hop_delays(sent: float, received: Sequence[str]) -> dict[str, float]:
    """Delay each hop added, by hop index ``"1"`` … ``"5"`` (later hops add to ``"5"``)."""
    delays: dict[str, float] = {}
    previous = sent
    stamps = (_stamp(value) for value in reversed(received))
    for index, stamp in enumerate((s for s in stamps if s is not None), start=1):
        hop = str(min(index, MAX_HOPS))
        delays[hop] = delays.get(hop, 0.0) + max(0.0, stamp - previous)
        previous = max(previous, stamp)
    return delays
