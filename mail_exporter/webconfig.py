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
connection (each accepted connection is handed the running web config's context,
:mod:`mail_exporter.web_limits`); passwords already verified stay verified while their
hash is unchanged. Turning TLS on or off needs a restart: clients of the port, which
stays open, expect it to speak TLS or not as it did.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    model_validator,
)

from mail_exporter.basic_auth import BasicAuth
from mail_exporter.config.fields import ConfigPath, StrictModel
from mail_exporter.config.files import MAX_CONFIG_BYTES, UnreadableFile, read_bounded
from mail_exporter.config.validation import describe_error, load_yaml_file, validate_yaml

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
