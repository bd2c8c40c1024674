"""The web config (``--web.config.file``): TLS and basic auth for the endpoints.

The format is the Prometheus exporter-toolkit's, so a file written for node_exporter
or blackbox_exporter works here::

    tls_server_config:
      cert_file: server.crt            # relative paths: from the web config's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.crt
      client_allowed_sans: [prometheus.example.com]
      min_version: TLS12               # TLS12 | TLS13
      max_version: TLS13
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt: htpasswd -nBC 10 "" | tr -d ':\\n'
    mail_exporter:                     # this exporter's own keys (other exporters refuse them)
      unauthenticated_endpoints: [/metrics, /probe]

With ``basic_auth_users`` every endpoint asks for a password except /-/healthy (health
checks need none) and those in ``mail_exporter.unauthenticated_endpoints``: reads may
be left open that way (/, /metrics, /probe, /config, /-/ready) while /-/reload, which
changes the running state, always needs a password; the key is refused without users,
where it could protect nothing. It lives under a key of its own so that it can never
be mistaken for one of exporter-toolkit's.

What Python's TLS cannot do faithfully is refused with a reason rather than ignored:
``RequireAnyClientCert`` (OpenSSL verifies every certificate it demands), Go cipher
and curve names (OpenSSL's defaults for the chosen versions apply), inline ``cert``,
``key`` and ``client_ca`` (keys belong in files) and ``rate_limit``.
``RequestClientCert`` asks Go to request a certificate and never check it; the access
it grants is that of ``NoClientCert``, which is what it does here. ``http2`` is
accepted and changes nothing: the exporter serves HTTP/1.1.

A reload (SIGHUP, POST /-/reload) re-reads this file with the main config: new users
and hashes apply to the next request, new certificates, CAs and versions to the next
connection; passwords already verified stay verified while their hash is unchanged.
Turning TLS on or off needs a restart, since the listening socket stays.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import logging
import re
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import bcrypt
from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    model_validator,
)

from mail_exporter.config.fields import ConfigPath, StrictModel
from mail_exporter.config.files import MAX_CONFIG_BYTES, UnreadableFile, read_bounded
from mail_exporter.config.validation import describe_error, load_yaml_file, validate_yaml
from mail_exporter.slots import Slots, SlotsFull

logger = logging.getLogger(__name__)

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLSVersionName = Literal["TLS12", "TLS13"]

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_VERIFY_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_DEFAULT_CIPHERS = "OpenSSL's defaults for the TLS versions apply (choose those with min_version)"
_UNSUPPORTED_KEYS = {
    "cert": "inline certificates are not supported: use cert_file",
    "key": "inline keys are not supported: keep the key in a file and give key_file",
    "client_ca": "inline CA certificates are not supported: use client_ca_file",
    "cipher_suites": f"not supported: {_DEFAULT_CIPHERS}",
    "curve_preferences": f"not supported: {_DEFAULT_CIPHERS}",
    "prefer_server_cipher_suites": f"not supported: {_DEFAULT_CIPHERS}",
    "rate_limit": "not supported: limit request rates in a reverse proxy",
}
HeaderName = Literal[
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
]
# The headers exporter-toolkit lets a web config set, with the values allowed for those
# that are enumerations.
_HEADER_VALUES: dict[HeaderName, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
HASHING_THREADS: Final = 1
"""bcrypt checks computed at once."""
WAITING_PER_USER: Final = 4
"""bcrypt checks that may wait for a thread, per user name presented."""
# Remembered successful logins, at most: a new entry beyond this starts the set afresh.
_MAX_VERIFIED = 1024
# Remembered failed logins, at most: the oldest goes first.
_MAX_REFUSED = 4096


def _readable_file(path: Path) -> Path:
    """A certificate, key or CA file that ssl may be given: a regular file of a sane size.

    ssl reads it by its path, so the check comes first (a FIFO would block the reload)."""
    try:
        read_bounded(path, MAX_CONFIG_BYTES)
    except UnreadableFile as error:
        raise ValueError(f"cannot read {str(path)!r}: {error}") from None
    return path


FilePath = Annotated[ConfigPath, AfterValidator(_readable_file)]


def _bcrypt_hash(value: str) -> str:
    # Never quote the value: a plain password written here by mistake must not reach a log.
    if not _BCRYPT_HASH.fullmatch(value):
        raise ValueError(
            "not a bcrypt hash ($2y$10$ and 53 more characters): "
            "make one with `mail-exporter hash-password`"
        )
    return value


def _user_name(value: str) -> str:
    if not value or ":" in value or any(ord(c) < 32 for c in value):
        raise ValueError("a user name must be non-empty, without ':' or control characters")
    return value


def _san(value: str) -> str:
    """Addresses in one canonical form, as certificates are compared in it."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value


def _no_passphrase() -> bytes:
    raise ValueError("key_file is encrypted: give the key without a passphrase")


class TLSServerConfig(StrictModel):
    """``tls_server_config``: the server certificate and who may connect."""

    cert_file: FilePath
    key_file: FilePath
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: FilePath | None = None
    client_allowed_sans: list[Annotated[str, AfterValidator(_san)]] | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    _context: ssl.SSLContext = PrivateAttr()

    @model_validator(mode="after")
    def _build_context(self) -> TLSServerConfig:
        self._check_client_auth()
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _TLS_VERSIONS[self.min_version]
        context.maximum_version = _TLS_VERSIONS[self.max_version]
        try:
            context.load_cert_chain(self.cert_file, self.key_file, password=_no_passphrase)
        except ssl.SSLError as error:
            raise ValueError(
                f"cert_file and key_file are not a PEM certificate and its key: {error}"
            ) from None
        if self.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca_file)
            except ssl.SSLError as error:
                raise ValueError(f"cannot use client_ca_file: {error}") from None
        context.verify_mode = _VERIFY_MODES[self.client_auth_type]
        self._context = context
        return self

    def _check_client_auth(self) -> None:
        kind = self.client_auth_type
        if kind == "RequireAnyClientCert":
            raise ValueError(
                "client_auth_type RequireAnyClientCert (any certificate, unchecked) is not "
                "supported: use RequireAndVerifyClientCert with client_ca_file"
            )
        verifies = _VERIFY_MODES[kind] != ssl.CERT_NONE
        if verifies and self.client_ca_file is None:
            raise ValueError(f"client_auth_type {kind} needs client_ca_file")
        if self.client_ca_file is not None and kind == "NoClientCert":
            raise ValueError("client_ca_file is set but client_auth_type is NoClientCert")
        if self.client_allowed_sans is not None and kind != "RequireAndVerifyClientCert":
            raise ValueError(
                "client_allowed_sans needs client_auth_type RequireAndVerifyClientCert"
            )

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    def allows_peer(self, peercert: Mapping[str, Any] | None) -> bool:
        """Whether a verified client certificate has one of ``client_allowed_sans``."""
        if self.client_allowed_sans is None:
            return True
        if not peercert:
            return False
        names = {_san(str(value)) for _, value in peercert.get("subjectAltName", ())}
        return not names.isdisjoint(self.client_allowed_sans)

    @property
    def summary(self) -> str:
        versions = {self.min_version, self.max_version}
        versions_text = "-".join(sorted(versions))
        return f"TLS ({versions_text}, client certificates: {self.client_auth_type})"


class HTTPServerConfig(StrictModel):
    """``http_server_config``: extra response headers."""

    http2: bool = True  # exporter-toolkit's switch; this server speaks HTTP/1.1 either way
    headers: dict[HeaderName, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_values(self) -> HTTPServerConfig:
        problems = []
        for name, value in self.headers.items():
            allowed = _HEADER_VALUES[name]
            if allowed and value.lower() not in allowed:
                problems.append(f"{name} must be {' or '.join(allowed)}")
            if any(ord(c) < 32 for c in value):
                problems.append(f"{name} must not contain line breaks or control characters")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class HashingBusy(Exception):
    """Too many password checks wait for this user name: answer 503 at once."""


class _Hashing:
    """The threads bcrypt runs in and the turns at them; handed on across reloads."""

    def __init__(self) -> None:
        self._turns = Slots(HASHING_THREADS, max_waiting=WAITING_PER_USER)
        self._threads = ThreadPoolExecutor(HASHING_THREADS, thread_name_prefix="bcrypt")
        self._shedding = False

    async def run(
        self, queue: bytes | None, settled: Callable[[], bool | None], check: Callable[[], bool]
    ) -> bool:
        """``check()`` in a hashing thread once ``queue`` has its turn, unless ``settled()``
        knows the answer by then (another request with the same credentials was first)."""
        try:
            await self._turns.acquire(queue)
        except SlotsFull:
            if not self._shedding:
                self._shedding = True
                logger.warning(
                    "basic auth: more than %d password checks wait for one user; "
                    "answering 503 to more until they are done",
                    WAITING_PER_USER,
                )
            raise HashingBusy from None
        known = settled()
        if known is not None:
            self._release()
            return known
        done = asyncio.wrap_future(self._threads.submit(check))
        # The turn ends with the computation, not with its waiter (a client may go away).
        done.add_done_callback(lambda _: self._release())
        return await asyncio.shield(done)

    def _release(self) -> None:
        self._turns.release()
        if self._shedding and not self._turns.queued:
            self._shedding = False
            logger.info("basic auth: no more password checks waiting; 503s are over")


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    bcrypt is slow on purpose, which makes it a lever for anyone who can reach the port:

    - Every outcome is remembered under a keyed hash (HMAC with a per-process random key)
      of the user, the hash in force and the password presented. The next scrape with the
      right credentials skips bcrypt, and a client retrying an outdated password costs
      one check, not one a request. Passwords are never kept. A changed hash makes its
      entries useless at once, since the hash is part of the key.
    - Checks run in threads of their own, ``HASHING_THREADS`` at once: guessing costs
      that many CPUs at most, never stalls the event loop and never takes the threads
      /metrics renders in. Checks waiting for a thread queue per user name presented and
      the queues take turns, so guesses at one user's password delay another user by a
      few checks at most. Each queue holds ``WAITING_PER_USER``; past it a request gets
      503 with ``Retry-After`` at once, and the log says so once while it lasts. Names
      that are not configured share one queue, so inventing names buys no more turns;
      the price is that during such a flood, whether a name is configured can show
      (503 at once, or an answer later). User names are not the secret; passwords are.
    - An unknown user is checked against a decoy hash of the highest cost in use, so
      timing alone does not tell which users exist.
    - A reload hands all this on (:meth:`take_over`): credentials verified before stay
      verified while their user's hash is the same, so scrapes need no new bcrypt check,
      and checks in flight keep counting against the bound.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._hashes = {name.encode(): value.encode() for name, value in users.items()}
        self._decoy_cost = max(int(value[4:6]) for value in users.values())
        self._decoy: bytes | None = None
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()
        self._refused: OrderedDict[bytes, None] = OrderedDict()
        self._hashing = _Hashing()

    def take_over(self, previous: BasicAuth) -> None:
        """Share what ``previous`` (the running web config's) remembers, and its threads."""
        self._key = previous._key
        self._verified = previous._verified
        self._refused = previous._refused
        self._hashing = previous._hashing
        if previous._decoy_cost == self._decoy_cost:
            self._decoy = previous._decoy

    async def allows(self, authorization: str | None) -> bool:
        """Whether the ``Authorization`` header names a user with the right password.

        Raises :class:`HashingBusy` when too many checks wait for that user name."""
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, _, password = credentials.partition(b":")
        hashed = self._hashes.get(user)
        # Neither a user name nor a hash holds ":", so the joined fields are unambiguous.
        key = hmac.digest(self._key, b":".join((user, hashed or b"", password)), "sha256")
        known = self._known(key)
        if known is not None:
            return known
        queue = user if hashed is not None else None
        valid = await self._hashing.run(
            queue, lambda: self._known(key), lambda: self._verify(hashed, password)
        )
        self._remember(key, valid)
        return valid

    def _known(self, key: bytes) -> bool | None:
        if key in self._verified:
            return True
        return False if key in self._refused else None

    def _remember(self, key: bytes, valid: bool) -> None:
        if valid:
            if len(self._verified) >= _MAX_VERIFIED:
                self._verified.clear()
            self._verified.add(key)
            return
        self._refused[key] = None
        if len(self._refused) > _MAX_REFUSED:
            self._refused.popitem(last=False)

    def _verify(self, hashed: bytes | None, password: bytes) -> bool:
        if hashed is None:
            if self._decoy is None:
                self._decoy = bcrypt.hashpw(b"decoy", bcrypt.gensalt(self._decoy_cost))
            _checkpw(password, self._decoy)
            return False
        return _checkpw(password, hashed)


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)  # compares in constant time
    except ValueError:  # longer than bcrypt's 72 bytes: no configured password is
        return False


def _basic_credentials(authorization: str | None) -> bytes | None:
    """``user:password`` from a Basic authorization header, or None."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        credentials = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return credentials if b":" in credentials else None


ALWAYS_OPEN_ENDPOINT = "/-/healthy"
STATE_CHANGING_ENDPOINT = "/-/reload"
OPENABLE_ENDPOINTS = ("/", "/metrics", "/probe", "/config", "/-/ready")


def _openable_endpoint(value: str) -> str:
    if value == STATE_CHANGING_ENDPOINT:
        raise ValueError(f"{value} changes the running config: it always needs a password")
    if value == ALWAYS_OPEN_ENDPOINT:
        raise ValueError(f"{value} is always served without a password")
    if value not in OPENABLE_ENDPOINTS:
        raise ValueError(f"not an endpoint: choose from {', '.join(OPENABLE_ENDPOINTS)}")
    return value


class ExporterExtensions(StrictModel):
    """``mail_exporter``: this exporter's own keys, beyond exporter-toolkit's."""

    unauthenticated_endpoints: list[Annotated[str, AfterValidator(_openable_endpoint)]] = Field(
        default_factory=list
    )
    """Endpoints served without a password although ``basic_auth_users`` is set."""


class WebConfig(StrictModel):
    """The whole web config; the default (no file) serves plain HTTP without authentication."""

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[
        Annotated[str, AfterValidator(_user_name)], Annotated[str, AfterValidator(_bcrypt_hash)]
    ] = Field(default_factory=dict)
    mail_exporter: ExporterExtensions = ExporterExtensions()
    _basic_auth: BasicAuth | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _prepare_basic_auth(self) -> WebConfig:
        if self.mail_exporter.unauthenticated_endpoints and not self.basic_auth_users:
            raise ValueError(
                "mail_exporter.unauthenticated_endpoints needs basic_auth_users: "
                "without them no endpoint asks for a password"
            )
        if self.basic_auth_users:
            self._basic_auth = BasicAuth(self.basic_auth_users)
        return self

    @property
    def basic_auth(self) -> BasicAuth | None:
        return self._basic_auth

    def password_check(self, endpoint: str | None) -> BasicAuth | None:
        """What checks the password for a request to ``endpoint`` (a route's path; None
        when no route matched), or None when it needs none."""
        if (
            endpoint == ALWAYS_OPEN_ENDPOINT
            or endpoint in self.mail_exporter.unauthenticated_endpoints
        ):
            return None
        return self._basic_auth

    def take_over(self, running: WebConfig) -> None:
        """Keep what the ``running`` web config's basic auth learnt (see :class:`BasicAuth`)."""
        if self._basic_auth is not None and running._basic_auth is not None:
            self._basic_auth.take_over(running._basic_auth)

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        return self.tls_server_config.context if self.tls_server_config else None

    def allows_peer(self, peercert: Mapping[str, Any] | None) -> bool:
        tls = self.tls_server_config
        return tls is None or tls.allows_peer(peercert)

    def security(self) -> tuple[int, str]:
        """A log level and a phrase for the start-up line: how the endpoints are protected."""
        tls = self.tls_server_config
        count = len(self.basic_auth_users)
        users = f"basic auth for {count} user{'s' * (count != 1)}" if count else ""
        if users and self.mail_exporter.unauthenticated_endpoints:
            users += f" (not on {', '.join(self.mail_exporter.unauthenticated_endpoints)})"
        if tls is None:
            if users:
                return logging.WARNING, f"with {users} but without TLS: passwords cross unencrypted"
            return logging.WARNING, (
                "without TLS or authentication: anyone who can reach it can read the metrics "
                "and run probes (see --web.config.file)"
            )
        authenticated = users or tls.client_auth_type == "RequireAndVerifyClientCert"
        if not authenticated:
            return logging.WARNING, f"with {tls.summary} but without authentication"
        return logging.INFO, f"with {tls.summary}" + (f" and {users}" if users else "")


class ReloadableTLSContext(ssl.SSLContext):
    """The listening socket's context: each new connection is wrapped with ``current``.

    asyncio wraps every accepted connection with ``wrap_bio``, so replacing ``current``
    on a reload renews certificates, client CAs and versions for the next connection
    without closing the port; connections already open keep theirs.
    """

    current: ssl.SSLContext

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.current.wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def reloadable(context: ssl.SSLContext) -> ReloadableTLSContext:
    listening = ReloadableTLSContext(ssl.PROTOCOL_TLS_SERVER)
    listening.current = context
    return listening


def _problem(item: Mapping[str, Any]) -> str:
    if item["type"] == "extra_forbidden" and item["loc"][-1] in _UNSUPPORTED_KEYS:
        return _UNSUPPORTED_KEYS[item["loc"][-1]]
    return describe_error(item)


def parse_web_config(text: str, source: str, directory: Path | None = None) -> WebConfig:
    """Validate a web config's YAML; raise :class:`ConfigError` listing every problem."""
    return validate_yaml(
        text, source, WebConfig, describe=_problem, context={"directory": directory}
    )


def load_web_config(path: Path) -> WebConfig:
    """Read and validate a web config file."""
    return load_yaml_file(path, parse_web_config)


def read_web_config(path: Path | None) -> WebConfig:
    """The file's web config, or the default (plain HTTP, no authentication) without one."""
    return load_web_config(path) if path is not None else WebConfig()


def hash_password(password: str, cost: int) -> str:
    """A bcrypt hash for ``basic_auth_users``."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
