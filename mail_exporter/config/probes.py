"""What the probes are given: modules (protocol, TLS, login), targets, global settings, /probe.

A module holds the keys every protocol shares, as the design's contract names them
(``protocol``, ``tls``, ``require_tls``, ``timeout``, ``tls_config``, ``auth``).
Passwords come from a file or the environment, never from the config, and are read
while the config is validated: a missing secret is a config error, not a failed probe.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PrivateAttr, SecretStr, model_validator

from mail_exporter.allowlist import TargetAllowlist, checked_pattern
from mail_exporter.config.fields import (
    AddressText,
    ConfigPath,
    Duration,
    LabelName,
    StrictModel,
    read_named_file,
)
from mail_exporter.config.files import MAX_CONFIG_BYTES, MAX_SECRET_BYTES

Protocol = Literal["smtp", "imap", "pop3"]
TLSMode = Literal["none", "starttls", "implicit"]


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
    ca_file: ConfigPath | None = None
    server_name: Annotated[str, AfterValidator(_server_name)] | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _ca_file_readable(self) -> TLSConfig:
        if self.ca_file is not None:
            read_named_file("ca_file", self.ca_file, MAX_CONFIG_BYTES)
        return self


class AuthConfig(StrictModel):
    """A login check. The password comes from a file or the environment, never the config."""

    username: str = Field(min_length=1)
    password_file: ConfigPath | None = None
    password_env: str | None = None
    mechanism: Literal["auto", "plain", "login"] = "auto"
    _password: SecretStr = PrivateAttr(default=SecretStr(""))

    @model_validator(mode="after")
    def _load_password(self) -> AuthConfig:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("set exactly one of password_file and password_env")
        if self.password_file is not None:
            content = read_named_file("password_file", self.password_file, MAX_SECRET_BYTES)
            try:
                password = content.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise ValueError(
                    f"password_file {str(self.password_file)!r} is not UTF-8 text"
                ) from None
        else:
            assert self.password_env is not None
            if self.password_env not in os.environ:
                raise ValueError(f"environment variable {self.password_env} is not set")
            password = os.environ[self.password_env]
            try:  # undecodable bytes are kept as lone surrogates, which cannot be sent
                password.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"environment variable {self.password_env} is not UTF-8 text"
                ) from None
        if any(c in password + self.username for c in "\r\n\0"):
            raise ValueError("username and password must not contain line breaks or NUL")
        self._password = SecretStr(password)
        return self

    @property
    def password(self) -> str:
        return self._password.get_secret_value()


class ModuleConfig(StrictModel):
    """How to probe one kind of service: protocol, TLS mode, timeout, login.

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
    ehlo_name: str | None = None
    tls_config: TLSConfig = TLSConfig()
    auth: AuthConfig | None = None

    @model_validator(mode="after")
    def _check_tls_options(self) -> ModuleConfig:
        if self.require_tls is not None and self.tls != "starttls":
            raise ValueError("require_tls applies only to tls: starttls")
        if self.ehlo_name is not None and self.protocol != "smtp":
            raise ValueError("ehlo_name applies only to protocol: smtp")
        if self.auth and self.auth.mechanism == "login" and self.protocol == "pop3":
            raise ValueError("pop3 logs in with USER/PASS (mechanism auto) or AUTH PLAIN (plain)")
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
        return self

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
