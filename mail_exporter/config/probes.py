"""What the probes are given: modules (protocol, TLS, login), targets, global settings, /probe.

A module holds the keys every protocol shares, as the design's contract names them
(``protocol``, ``tls``, ``require_tls``, ``timeout``, ``tls_config``, ``auth``), and
the settings of its one protocol in a section named after it, as blackbox_exporter
nests ``tcp:`` or ``dns:`` under a module::

    modules:
      submission:
        protocol: smtp
        tls: starttls
        smtp: {ehlo_name: monitor.example.com}

Each protocol has its own module class (:data:`MODULE_TYPES`), chosen by ``protocol``
when a module is validated: a key of another protocol's section is an unknown key, so
no check says "this applies only to smtp", and a new protocol option is one field in
its class. A value the shared keys allow but a protocol cannot use is narrowed in the
same way (POP3 has no AUTH LOGIN). A key that moved into a protocol's section is
reported with where it went (:data:`MOVED_MODULE_KEYS`).

:data:`PROTOCOLS` is the one list of protocols: the command line's ``--protocol``,
the module classes and the probe table (:mod:`mail_exporter.probes`) are keyed by it.
Passwords come from a file or the environment, never from the config, and are read
while the config is validated: a missing secret is a config error, not a failed probe.
So are the secrets of an OAuth2 token source (``auth.oauth2``, :mod:`.oauth2`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    model_validator,
)

from mail_exporter.allowlist import TargetAllowlist, checked_pattern
from mail_exporter.config.fields import (
    AddressText,
    ConfigPath,
    Duration,
    LabelName,
    StrictModel,
    read_named_file,
    secret_from_environment,
    secret_from_file,
)
from mail_exporter.config.files import MAX_CONFIG_BYTES
from mail_exporter.config.oauth2 import OAuth2Config

Protocol = Literal["smtp", "imap", "pop3"]
PROTOCOLS: Final[tuple[Protocol, ...]] = get_args(Protocol)
TLSMode = Literal["none", "starttls", "implicit"]
TLS_MODES: Final[tuple[TLSMode, ...]] = get_args(TLSMode)


def _server_name(value: str) -> str:
    """A name TLS can send as SNI (as the ssl module encodes it), or an address."""
    try:
        encoded = value.removesuffix(".").encode("idna")
    except UnicodeError:
        encoded = b""
    if not encoded:
        raise ValueError(
            f"server_name {value!r} is not a host name: labels of 1 to 63 characters "
            "between dots"
        )
    return value


class TLSConfig(StrictModel):
    """``insecure_skip_verify`` unset follows the module (:attr:`ModuleConfig.verifies`)."""

    ca_file: ConfigPath | None = None
    server_name: Annotated[str, AfterValidator(_server_name)] | None = None
    insecure_skip_verify: bool | None = None

    @model_validator(mode="after")
    def _ca_file_readable(self) -> TLSConfig:
        if self.ca_file is not None:
            read_named_file("ca_file", self.ca_file, MAX_CONFIG_BYTES)
        return self


OAUTH2_MECHANISMS: Final = ("xoauth2", "oauthbearer")
"""The SASL mechanisms that log in with an OAuth2 access token (``auth.oauth2``)."""


class AuthConfig(StrictModel):
    """A login check. The password comes from a file or the environment, never the config;
    with ``oauth2`` (and ``mechanism: xoauth2`` or ``oauthbearer``) an access token from
    the source it names takes the password's place (see :mod:`mail_exporter.config.oauth2`)."""

    username: str = Field(min_length=1)
    password_file: ConfigPath | None = None
    password_env: str | None = None
    mechanism: Literal["auto", "plain", "login", "xoauth2", "oauthbearer"] = "auto"
    oauth2: OAuth2Config | None = None
    _password: SecretStr = PrivateAttr(default=SecretStr(""))

    @model_validator(mode="after")
    def _load_password(self) -> AuthConfig:
        if any(c in self.username for c in "\r\n\0\x01"):
            raise ValueError("username must not contain line breaks, NUL or \\x01")
        if self.oauth2 is not None:
            if self.password_file is not None or self.password_env is not None:
                raise ValueError(
                    "password_file and password_env do not go with oauth2: "
                    "the access token is the secret"
                )
            if self.mechanism not in OAUTH2_MECHANISMS:
                raise ValueError(
                    f"oauth2 logs in with mechanism: xoauth2 or oauthbearer, not {self.mechanism}"
                )
            return self
        if self.mechanism in OAUTH2_MECHANISMS:
            raise ValueError(
                f"mechanism {self.mechanism} needs oauth2: the source of its access token"
            )
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("set exactly one of password_file and password_env")
        if self.password_file is not None:
            password = secret_from_file("password_file", self.password_file)
        else:
            assert self.password_env is not None
            password = secret_from_environment(self.password_env)
        if any(c in password for c in "\r\n\0"):
            raise ValueError("the password must not contain line breaks or NUL")
        self._password = SecretStr(password)
        return self

    @property
    def password(self) -> str:
        return self._password.get_secret_value()

    def secrets(self) -> list[str]:
        """The password, or every secret the token source read."""
        if self.oauth2 is not None:
            return self.oauth2.secrets()
        return [self.password] if self.password else []


class RevocationConfig(StrictModel):
    """``revocation:`` on a module: the checks of the leaf certificate to run after the
    handshake (:mod:`mail_exporter.probes.revocation`). ``crl`` and ``ocsp`` each send one
    HTTP request, to a URL the certificate names; ``stapling`` opens one more connection to
    the server (at most once an hour); all are off unless the module asks."""

    crl: bool = False
    ocsp: bool = False
    stapling: bool = False

    @property
    def enabled(self) -> bool:
        return self.crl or self.ocsp or self.stapling

    @property
    def fetches(self) -> bool:
        """Whether a check sends a request where the certificate points (not the server)."""
        return self.crl or self.ocsp


class TLSScanConfig(StrictModel):
    """``tls_scan:`` in a module: which TLS versions and weak cipher classes the server
    accepts, scanned again after ``interval`` (see :mod:`mail_exporter.probes.tls_scan`)."""

    interval: Duration = Field(default="1h", validate_default=True)


def _tls_scan_switch(value: object) -> object:
    """``tls_scan: true`` takes every default; ``false`` is off, as leaving it out is."""
    if value is True:
        return {}
    if value is False:
        return None
    if value is None or isinstance(value, Mapping | TLSScanConfig):
        return value
    raise ValueError("tls_scan takes true, false or a section such as {interval: 1h}")


TLSScanSwitch = Annotated[TLSScanConfig | None, BeforeValidator(_tls_scan_switch)]


class SeriesConfig(StrictModel):
    """Series of a module's scheduled targets that large fleets may do without (an SMTP
    target without TLS costs 34 series with both, 8 or 9 without). /probe answers are
    unchanged."""

    latency_histogram: bool = True
    """``mail_probe_latency_seconds``: 16 series a target (14 buckets, sum and count), the
    per-target duration quantiles of the dashboards and of the recording rule
    ``mail:probe_latency_seconds:p95_rate1h`` (MailProbeSlow reads the last duration)."""
    zero_failure_counters: bool = True
    """``mail_probe_failures_total`` for every reason from the start (10 series a target);
    false: only for the reasons the target has failed for. A counter that appears at 1
    has no increase to show for its first failure."""


class ModuleConfig(StrictModel):
    """How to probe one kind of service: protocol, TLS mode, timeout, login.

    Validating or building one gives the class of its protocol (:data:`MODULE_TYPES`),
    which adds that protocol's section.

    A login without TLS is a written choice (``allow_plaintext_auth: true``): ``auth``
    with ``tls: none`` is an error without it, and with ``tls: starttls`` and
    ``require_tls: false`` the login is withheld when STARTTLS is not offered.
    """

    protocol: Protocol
    tls: TLSMode = "none"
    require_tls: bool | None = None
    allow_plaintext_auth: bool = False
    timeout: Duration = Field(default="10s", validate_default=True)
    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = True
    tls_config: TLSConfig = TLSConfig()
    auth: AuthConfig | None = None
    revocation: RevocationConfig = RevocationConfig()
    tls_scan: TLSScanSwitch = None
    series: SeriesConfig = SeriesConfig()

    @classmethod
    def model_for(cls, data: object) -> type[ModuleConfig]:
        """The class that validates ``data``: that of its protocol, when it names one."""
        return _protocol_class(cls, data) or cls

    def __new__(cls, *args: Any, **data: Any) -> ModuleConfig:
        """``ModuleConfig(protocol="smtp", ...)`` in code builds the class of that protocol."""
        return super().__new__(_protocol_class(cls, data) or cls)

    @model_validator(mode="wrap")
    @classmethod
    def _of_its_protocol(
        cls, data: Any, handler: ModelWrapValidatorHandler[ModuleConfig], info: ValidationInfo
    ) -> ModuleConfig:
        """Validated as the class of its protocol; with a protocol missing or unknown, as this
        class, which reports that (and the shared keys' problems) where they are."""
        kind = _protocol_class(cls, data)
        return handler(data) if kind is None else kind.model_validate(data, context=info.context)

    @model_validator(mode="after")
    def _check_tls_options(self) -> ModuleConfig:
        if self.require_tls is not None and self.tls != "starttls":
            raise ValueError("require_tls applies only to tls: starttls")
        may_be_plaintext = self.tls != "implicit" and not self.starttls_required
        if self.allow_plaintext_auth and not (self.auth and may_be_plaintext):
            raise ValueError(
                "allow_plaintext_auth applies only to a module with auth and tls: none, "
                "or tls: starttls with require_tls: false"
            )
        if self.auth and self.tls == "none" and not self.allow_plaintext_auth:
            raise ValueError(
                "auth with tls: none sends the password in cleartext: add "
                "allow_plaintext_auth: true to do that on purpose, or use tls: starttls or implicit"
            )
        if self.tls_scan is not None and self.tls == "none":
            raise ValueError("tls_scan applies only to tls: starttls or implicit")
        return self

    @model_validator(mode="after")
    def _check_revocation(self) -> ModuleConfig:
        if self.revocation.enabled and self.tls == "none":
            raise ValueError("revocation applies only to a module with tls: starttls or implicit")
        return self

    @property
    def opportunistic(self) -> bool:
        """Opportunistic TLS (RFC 7435) as senders use it on port 25: STARTTLS when offered
        (``require_tls: false``) and no login. Senders deliver over TLS whatever the
        certificate, so an unverified one is no outage there."""
        return self.tls == "starttls" and self.require_tls is False and self.auth is None

    @property
    def verifies(self) -> bool:
        """Whether a certificate that does not verify fails the probe (else it is reported,
        ``mail_tls_cert_verified 0``). ``insecure_skip_verify`` decides where it is written;
        unset, an opportunistic module reports and every other module fails, so that
        ``insecure_skip_verify: false`` makes an MX whose domain publishes MTA-STS
        ``enforce`` (whose senders do verify) fail and page."""
        skip = self.tls_config.insecure_skip_verify
        return not (self.opportunistic if skip is None else skip)

    @property
    def starttls_required(self) -> bool:
        """With STARTTLS, fail when it is not offered unless the module says otherwise."""
        return self.tls == "starttls" and self.require_tls is not False

    @property
    def timeout_seconds(self) -> float:
        return float(self.timeout)

    @property
    def has_credentials(self) -> bool:
        """Whether probing with this module hands the server a secret. /probe then uses it
        only on explicitly allowed targets; an option that sends a secret counts here."""
        return self.auth is not None

    @property
    def active_checks(self) -> tuple[str, ...]:
        """The module's checks that test a server's defences (an open relay, user
        enumeration) or send requests where the server's certificate points (revocation
        by CRL or OCSP; a stapled answer comes from the server itself): /probe runs them
        only where it would log in, on the module's own scheduled targets and on allowed
        ones, so that nobody can make the exporter a scanner of other people's servers, or
        make it fetch the URLs of a certificate of their choosing."""
        return ("revocation",) if self.revocation.fetches else ()


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_MAILBOX = re.compile(rf"(?:{_ATOM}(?:\.{_ATOM})*)@{_LABEL}(?:\.{_LABEL})*")
"""RFC 5321's Mailbox with a dot-string local part and a domain name: what goes between
``<`` and ``>`` in ``MAIL FROM``/``RCPT TO`` and after ``VRFY``, with nothing in it that
could end the command or start another (no spaces, quotes, brackets or line breaks)."""


def _mailbox(value: str) -> str:
    local, _, _ = value.rpartition("@")
    if _MAILBOX.fullmatch(value) is None or len(local) > 64 or len(value) > 254:
        raise ValueError(
            f"{value!r} is not a plain mailbox address: local-part@domain in ASCII, "
            "without spaces, quotes, <> or line breaks"
        )
    return value


Mailbox = Annotated[str, AfterValidator(_mailbox)]


class RelayCheck(StrictModel):
    """``smtp: {relay_check: ...}``: ``MAIL FROM``/``RCPT TO`` (never ``DATA``), then ``RSET``.

    Without a login (``authenticated: false``) it finds an open relay; with
    ``authenticated: true`` it runs after the module's login and finds whether relaying
    works for a user. Both addresses belong outside the server's own domains.
    """

    mail_from: Mailbox
    rcpt_to: Mailbox
    authenticated: bool = False


class EnumerationCheck(StrictModel):
    """``smtp: {enumeration_check: {address: ...}}``: ``VRFY`` and ``EXPN`` of an address that
    exists (``postmaster@`` one of the server's domains), compared with an unknown one."""

    address: Mailbox


class SMTPSettings(StrictModel):
    """``smtp:`` in an smtp module."""

    ehlo_name: str | None = None  # default: this host's FQDN
    relay_check: RelayCheck | None = None
    enumeration_check: EnumerationCheck | None = None


class SMTPModule(ModuleConfig):
    """An smtp module. Its security checks (:mod:`mail_exporter.probes.smtp_posture`) are the
    session's last step before QUIT, so one that breaks the conversation costs the QUIT only,
    never a step of the probe: those without a login need a module without ``auth``."""

    protocol: Literal["smtp"]
    smtp: SMTPSettings = SMTPSettings()

    @property
    def active_checks(self) -> tuple[str, ...]:
        checks = {"smtp.relay_check": self.smtp.relay_check,
                  "smtp.enumeration_check": self.smtp.enumeration_check}  # fmt: skip
        named = tuple(name for name, check in checks.items() if check is not None)
        return super().active_checks + named

    @model_validator(mode="after")
    def _checks_fit_the_login(self) -> SMTPModule:
        relay, enumeration = self.smtp.relay_check, self.smtp.enumeration_check
        if relay is not None and relay.authenticated and self.auth is None:
            raise ValueError(
                "smtp.relay_check with authenticated: true checks relaying after the "
                "module's login: add auth, or set authenticated: false"
            )
        unauthenticated = [] if relay is None or relay.authenticated else ["relay_check"]
        unauthenticated += [] if enumeration is None else ["enumeration_check"]
        if self.auth is not None and unauthenticated:
            raise ValueError(
                f"smtp.{' and smtp.'.join(unauthenticated)} without a login cannot run in a "
                "module with auth (they come after the login): put them in a module without "
                "auth; relay_check with authenticated: true checks relaying after the login"
            )
        return self


MAX_MAILBOXES: Final = 50
"""Most mailboxes one imap module checks: each costs four commands in the session."""
MAX_MAILBOX_NAME: Final = 255

MailboxKind = Literal["archive", "shared"]


def _mailbox_name(value: str) -> str:
    """A name sent in a quoted string and read back without a literal: printable ASCII
    without quotes or backslashes (a name in another script goes in modified UTF-7, RFC
    3501 5.1.3, as the server lists it)."""
    if (
        not value
        or len(value) > MAX_MAILBOX_NAME
        or not all(" " <= c <= "~" and c not in '"\\' for c in value)
    ):
        raise ValueError(
            f"mailbox name {value!r} must be 1 to {MAX_MAILBOX_NAME} printable ASCII "
            "characters without quotes or backslashes (modified UTF-7 for other scripts)"
        )
    return value


class MailboxCheck(StrictModel):
    """One mailbox of ``imap: {mailboxes: [...]}``: its counts, size, quota and the ages of
    its first and last message; ``newest_max_age`` says how recent its last message should
    be (exported, for the freshness alerts), ``kind`` labels an archive or shared mailbox."""

    name: Annotated[str, AfterValidator(_mailbox_name)]
    newest_max_age: Duration | None = None
    kind: MailboxKind | None = None


class IMAPSettings(StrictModel):
    """``imap:`` in an imap module."""

    mailboxes: list[MailboxCheck] = Field(default_factory=list, max_length=MAX_MAILBOXES)

    @model_validator(mode="after")
    def _names_unique(self) -> IMAPSettings:
        names = [mailbox.name for mailbox in self.mailboxes]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"mailboxes named more than once: {', '.join(twice)}")
        return self


class IMAPModule(ModuleConfig):
    """An imap module. Its mailbox checks (:mod:`mail_exporter.probes.imap_mailboxes`) come
    after the login, so they need ``auth``."""

    protocol: Literal["imap"]
    imap: IMAPSettings = IMAPSettings()

    @model_validator(mode="after")
    def _mailboxes_need_login(self) -> IMAPModule:
        if self.imap.mailboxes and self.auth is None:
            raise ValueError("imap.mailboxes are read after the login: add auth")
        return self


class POP3Auth(AuthConfig):
    """POP3 logs in with USER/PASS (``auto``), AUTH PLAIN (``plain``) or an OAuth2 mechanism:
    it has no AUTH LOGIN."""

    mechanism: Literal["auto", "plain", "xoauth2", "oauthbearer"] = "auto"


class POP3Module(ModuleConfig):
    protocol: Literal["pop3"]
    auth: POP3Auth | None = None


MODULE_TYPES: Final[Mapping[str, type[ModuleConfig]]] = {
    "smtp": SMTPModule,
    "imap": IMAPModule,
    "pop3": POP3Module,
}
"""The module class of each protocol, in the order of :data:`PROTOCOLS`."""


def _protocol_class(cls: type[ModuleConfig], data: object) -> type[ModuleConfig] | None:
    """The class of the protocol ``data`` names, when ``cls`` is the shared base."""
    protocol = data.get("protocol") if cls is ModuleConfig and isinstance(data, dict) else None
    return MODULE_TYPES.get(protocol) if isinstance(protocol, str) else None


MOVED_MODULE_KEYS: Final[Mapping[str, Protocol]] = {"ehlo_name": "smtp"}
"""Keys that were once read at module level, and the protocol section they moved into."""


def moved_key_problem(error: Mapping[str, Any]) -> str | None:
    """Where a module key went, for the "unknown key" error of a config that has it at module
    level (``modules.NAME.ehlo_name``); ``None`` for every other error."""
    location = error["loc"]
    if error["type"] != "extra_forbidden" or len(location) != 3 or location[0] != "modules":
        return None
    key = location[2]
    section = MOVED_MODULE_KEYS.get(key)
    if section is None:
        return None
    return f"{key} has moved into the module's {section} section: {section}: {{{key}: ...}}"


class TargetConfig(StrictModel):
    name: LabelName
    address: AddressText
    module: str
    interval: Duration | None = None


class GlobalConfig(StrictModel):
    interval: Duration = Field(default="30s", validate_default=True)
    concurrency: int = Field(default=64, ge=1, le=10000)
    scrape_timeout_offset: Duration = Field(default="500ms", validate_default=True)


class ProbeConfig(StrictModel):
    """What /probe may reach. Its modules are the config's; its targets, the scheduled
    targets of the module and those matching one pattern, and with an empty list any
    target for a module without credentials (see :mod:`mail_exporter.allowlist`)."""

    allowed_targets: list[Annotated[str, AfterValidator(checked_pattern)]] = Field(
        default_factory=list
    )
    _allowlist: TargetAllowlist = PrivateAttr(default_factory=TargetAllowlist)

    @model_validator(mode="after")
    def _compile(self) -> ProbeConfig:
        self._allowlist = TargetAllowlist.of(self.allowed_targets)
        return self

    @property
    def allowlist(self) -> TargetAllowlist:
        return self._allowlist
