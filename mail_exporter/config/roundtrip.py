"""The round-trip routes: a test message submitted, then looked for in a mailbox.

Each leg has a ``method``. By default a route submits over SMTP with an smtp module
(``method: smtp``) and reads the mailbox with an imap or pop3 module that logs in
(``method`` left out, or ``imap``/``pop3``, which must then be the module's protocol).
``method: graph`` on either leg uses Microsoft Graph instead, for tenants that turn SMTP
AUTH off entirely (:mod:`mail_exporter.roundtrip.graph`)::

    send:
      method: graph
      mailbox: probe@contoso.com        # the user principal name (or object id) it sends as
      to: probe@contoso.com
      token:                            # a token source, as a module's auth.oauth2
        client_credentials: {token_url: ..., client_id: ..., client_secret_file: ...,
                             scope: https://graph.microsoft.com/.default}
    receive: {method: graph, mailbox: probe@contoso.com, token: ..., junk_folder: junkemail}

A Graph leg has no module: its ``token`` is an :class:`~mail_exporter.config.oauth2.OAuth2Config`
(the same model and the same broker as a module's, named ``ROUTE/send`` or
``ROUTE/receive`` in the ``mail_oauth2_*`` metrics), ``base_url`` is ``https://`` (or
``http://`` to a loopback address, as a token URL), ``ca_file`` the CA bundle that
verifies it (default: the system's), ``timeout`` the bound of each request. A leg is
validated as the class of its method, so a key of another method is an unknown key.

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

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from mail_exporter.config.fields import (
    AddressText,
    CAFile,
    Duration,
    LabelName,
    OptionalLabelName,
    StrictModel,
)
from mail_exporter.config.oauth2 import OAuth2Config, checked_web_url

MailAddress = Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$")]

DEFAULT_GRAPH_URL: Final = "https://graph.microsoft.com/v1.0"


def _graph_url(value: str) -> str:
    checked_web_url("base_url", value)
    if "?" in value:
        raise ValueError("base_url must not hold a ?query: the requests add their own")
    return value.rstrip("/")


def _path_segment(value: str) -> str:
    """A user or folder name that goes into a URL path as one segment."""
    if not value.isprintable() or any(c in value for c in "/\\?# "):
        raise ValueError(f"{value!r} must be printable, without spaces, / \\ ? or #")
    return value


GraphURL = Annotated[str, AfterValidator(_graph_url)]
PathSegment = Annotated[
    str, Field(min_length=1, max_length=320), AfterValidator(_path_segment)
]  # fmt: skip
"""A user principal name (at most 320 characters, as an address), an object id or a
folder's well-known name or id."""


class RoundTripSend(StrictModel):
    """Where the test message is submitted, with an smtp module (TLS mode, login)."""

    # graph never reaches this class (see _by_method); listed so that an unknown method
    # is told both values
    method: Literal["smtp", "graph"] = "smtp"
    address: AddressText
    module: str
    from_: MailAddress = Field(alias="from")
    to: MailAddress

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def sender(self) -> str:
        return self.from_

    @property
    def place(self) -> str:
        """Where the leg goes, as the status page shows it."""
        return self.address


class RoundTripReceive(StrictModel):
    """Where the test message is looked for, with an imap or pop3 module that logs in."""

    # graph never reaches this class (see _by_method); imap or pop3 must be the module's
    method: Literal["imap", "pop3", "graph"] | None = None
    address: AddressText
    module: str
    mailbox: str = "INBOX"
    junk_mailbox: str | None = None  # also looked in; arrival there counts as "junk"
    # Without UIDPLUS our messages are moved to a folder named this plus a random suffix,
    # deleted whole, so that messages someone else marked \Deleted are never expunged by us.
    cleanup_mailbox: str = "mail_exporter"
    poll_interval: Duration = Field(default="1s", validate_default=True)

    @property
    def place(self) -> str:
        """Where the leg goes, as the status page shows it."""
        return self.address


IMAP_ONLY_RECEIVE_KEYS = ("junk_mailbox", "cleanup_mailbox")
"""Keys of :class:`RoundTripReceive` that name mailboxes besides the inbox: POP3 has none."""


class GraphLeg(StrictModel):
    """What both Graph legs have: whose mailbox, the token, where Graph is and its CA."""

    method: Literal["graph"]
    mailbox: PathSegment
    token: OAuth2Config
    base_url: GraphURL = DEFAULT_GRAPH_URL
    ca_file: CAFile | None = None
    timeout: Duration = Field(default="10s", validate_default=True)

    @property
    def timeout_seconds(self) -> float:
        return float(self.timeout)

    @property
    def place(self) -> str:
        """Where the leg goes, as the status page shows it."""
        return f"Graph {self.mailbox}"


class GraphSend(GraphLeg):
    """``sendMail`` as ``mailbox`` to ``to``; ``from`` only to send as another address
    (which needs Exchange's SendAs right), else the mailbox's own is used."""

    from_: MailAddress | None = Field(default=None, alias="from")
    to: MailAddress

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def sender(self) -> str:
        """The From of the message as built (Graph sets the mailbox's own without ``from``)."""
        return self.from_ or self.mailbox


class GraphReceive(GraphLeg):
    """The messages of ``folder`` (a well-known name such as ``inbox``, or a folder id)
    and of ``junk_folder`` (``junkemail``), when set, where arrival counts as junk."""

    folder: PathSegment = "inbox"
    junk_folder: PathSegment | None = None
    poll_interval: Duration = Field(default="1s", validate_default=True)


def _by_method(graph: type[GraphLeg], other: type[StrictModel]) -> WrapValidator:
    """Validate a leg as ``graph`` with ``method: graph``, else as ``other``: the errors
    then name the keys of the method written, not of every method at once."""

    def validate(data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        if isinstance(data, graph | other):
            return data
        is_graph = isinstance(data, Mapping) and data.get("method") == "graph"
        return (graph if is_graph else other).model_validate(data, context=info.context)

    return WrapValidator(validate)


SendLeg = Annotated[RoundTripSend | GraphSend, _by_method(GraphSend, RoundTripSend)]
ReceiveLeg = Annotated[RoundTripReceive | GraphReceive, _by_method(GraphReceive, RoundTripReceive)]


class RoundTripRoute(StrictModel):
    name: LabelName
    site: OptionalLabelName = ""
    interval: Duration = Field(default="60s", validate_default=True)
    timeout: Duration = Field(default="120s", validate_default=True)
    send: SendLeg
    receive: ReceiveLeg

    def token_sources(self) -> list[tuple[str, OAuth2Config]]:
        """The token sources of its Graph legs, each with the name it has in the metrics."""
        legs = (("send", self.send), ("receive", self.receive))
        graph = [(side, leg) for side, leg in legs if isinstance(leg, GraphLeg)]
        return [(f"{self.name}/{side}", leg.token) for side, leg in graph]
