"""The round-trip routes: a test message submitted with an smtp module, looked for with an
imap or pop3 module that logs in.

Which modules a route may name is checked with the other references between sections
(:mod:`mail_exporter.config.references`), so that a wrong module is listed with every
other problem of the file.

A route's ``site`` names where its mail goes (``onprem``, ``m365``, ``gmail``: the user's
words) for comparing sites during a migration. It is a label value of the route's info
series only (``mail_roundtrip_route_info{route,site}``), never of the route's own series:
those keep one identity while a route is moved to another site, and dashboards join the
site on by ``route``. It is a label value like a route's name, or empty (unset).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from mail_exporter.config.fields import (
    AddressText,
    Duration,
    LabelName,
    OptionalLabelName,
    StrictModel,
)

MailAddress = Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$")]


class RoundTripSend(StrictModel):
    """Where the test message is submitted, with an smtp module (TLS mode, login)."""

    address: AddressText
    module: str
    from_: MailAddress = Field(alias="from")
    to: MailAddress

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RoundTripReceive(StrictModel):
    """Where the test message is looked for, with an imap or pop3 module that logs in."""

    address: AddressText
    module: str
    mailbox: str = "INBOX"
    junk_mailbox: str | None = None  # also looked in; arrival there counts as "junk"
    # Without UIDPLUS our messages are moved to a folder named this plus a random suffix,
    # deleted whole, so that messages someone else marked \Deleted are never expunged by us.
    cleanup_mailbox: str = "mail_exporter"
    poll_interval: Duration = Field(default="1s", validate_default=True)


IMAP_ONLY_RECEIVE_KEYS = ("junk_mailbox", "cleanup_mailbox")
"""Keys of :class:`RoundTripReceive` that name mailboxes besides the inbox: POP3 has none."""


class RoundTripRoute(StrictModel):
    name: LabelName
    site: OptionalLabelName = ""
    interval: Duration = Field(default="60s", validate_default=True)
    timeout: Duration = Field(default="120s", validate_default=True)
    send: RoundTripSend
    receive: RoundTripReceive
