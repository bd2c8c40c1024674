"""``auth.oauth2``: where a module's OAuth2 access token comes from, one source per module.

::

    auth:
      username: probe@contoso.com
      mechanism: xoauth2            # or oauthbearer
      oauth2:
        client_credentials:
          token_url: https://login.microsoftonline.com/TENANT/oauth2/v2.0/token
          client_id: 00000000-0000-0000-0000-000000000000
          client_secret_file: m365.secret   # or client_secret_env, or certificate_file
          scope: https://outlook.office365.com/.default          # + private_key_file

Exactly one of the sections :class:`ClientCredentials`, :class:`RefreshToken`,
:class:`JWTBearer`, ``token_command`` (an argv list, its program found on ``PATH`` as the
collectors' commands are) and ``token_file`` (a path). Secrets
come from ``*_file`` or ``*_env`` only and are read while the config is validated, as
passwords are: a missing file, an unset variable, a key that is not RSA or does not
belong to its certificate is a config error, not a failed probe. The refresh token's
file is read again at each fetch, since the exporter itself writes each rotated refresh
token back to it.

``token_url`` is ``https://``; plain ``http://`` is taken only to a loopback address
written as such (``127.0.0.1``, ``[::1]``), where a local token helper or a test server
listens and nothing crosses a network. No user or password in it: the client
authenticates in the form, never in the URL.

``scope`` is required for client credentials and the JWT bearer grant (Microsoft and
Google both refuse a request without one) and optional for a refresh token, whose grant
keeps the scope it was issued for.

Each source has a name, the module it belongs to (the ``source`` label of the
``mail_oauth2_*`` metrics); modules whose sources are the same (same settings and
secrets) share one, named after the first of them in the config, and so share its
tokens (:meth:`OAuth2Config.identity` says which are the same).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from pathlib import Path
from typing import Annotated, Final

from pydantic import AfterValidator, Field, PrivateAttr, SecretStr, model_validator
from yarl import URL

from mail_exporter.config.fields import (
    ConfigPath,
    StrictModel,
    read_named_file,
    secret_from_environment,
    secret_from_file,
)
from mail_exporter.config.files import MAX_CONFIG_BYTES, MAX_SECRET_BYTES
from mail_exporter.oauth2.jwt import (
    ServiceAccount,
    SigningKey,
    certificate_key,
    issuer_key,
    service_account,
)

MAX_URL_CHARACTERS: Final = 2048


def checked_web_url(key: str, value: str) -> str:
    """``value`` if it is an ``https://`` URL (``http://`` to a loopback address written as
    such) without credentials or a fragment, else a ValueError naming ``key``."""
    try:
        url = URL(value)
    except (ValueError, TypeError):
        url = URL()
    if len(value) > MAX_URL_CHARACTERS or not value.isprintable():
        raise ValueError(f"{key} must be printable and at most {MAX_URL_CHARACTERS} characters")
    if not url.absolute or not url.host:
        raise ValueError(f"{key} {value!r} is not an absolute http(s) URL")
    if url.user is not None or url.password is not None or url.fragment:
        raise ValueError(f"{key} must not hold a user, a password or a #fragment")
    if url.scheme == "https":
        return value
    if url.scheme == "http" and _loopback(url.host):
        return value
    raise ValueError(
        f"{key} must use https:// (http:// only to a loopback address such as 127.0.0.1)"
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _printable_text(value: str) -> str:
    if not value.isprintable():
        raise ValueError(f"{value!r} must be printable (no control characters)")
    return value


TokenURL = Annotated[str, AfterValidator(functools.partial(checked_web_url, "token_url"))]
Text = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_printable_text)]
"""A client id, scope, issuer or subject: sent in a form or a JWT, shown on /config."""


def _secret(
    file_key: str, path: Path | None, env_key: str, variable: str | None, required: bool
) -> SecretStr | None:
    """The secret of ``file_key`` or ``env_key``: one of them, or neither if not ``required``."""
    if path is not None and variable is not None:
        raise ValueError(f"set one of {file_key} and {env_key}, not both")
    if path is not None:
        secret = secret_from_file(file_key, path)
    elif variable is not None:
        secret = secret_from_environment(variable)
    elif required:
        raise ValueError(f"set one of {file_key} and {env_key}")
    else:
        return None
    if not secret:
        raise ValueError(f"{file_key if path is not None else env_key} gives an empty secret")
    return SecretStr(secret)


class ClientCredentials(StrictModel):
    """The client credentials grant (RFC 6749 4.4): the application's own token, as
    Microsoft's app-only access to mailboxes uses. The client authenticates with a secret
    (``client_secret_post``) or with a certificate: a client assertion it signs with the
    certificate's key (RFC 7523 2.2, see :mod:`mail_exporter.oauth2.jwt`)."""

    token_url: TokenURL
    client_id: Text
    client_secret_file: ConfigPath | None = None
    client_secret_env: str | None = None
    certificate_file: ConfigPath | None = None
    private_key_file: ConfigPath | None = None
    scope: Text
    _client_secret: SecretStr | None = PrivateAttr(default=None)
    _assertion_key: SigningKey | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_credential(self) -> ClientCredentials:
        secret_given = self.client_secret_file is not None or self.client_secret_env is not None
        key_given = self.certificate_file is not None or self.private_key_file is not None
        if secret_given == key_given:
            raise ValueError(
                "set one of client_secret_file, client_secret_env, or certificate_file "
                "with private_key_file"
            )
        if secret_given:
            self._client_secret = _secret(
                "client_secret_file", self.client_secret_file,
                "client_secret_env", self.client_secret_env, required=True,
            )  # fmt: skip
            return self
        if self.certificate_file is None or self.private_key_file is None:
            raise ValueError("certificate_file and private_key_file go together")
        certificate = read_named_file("certificate_file", self.certificate_file, MAX_CONFIG_BYTES)
        key = read_named_file("private_key_file", self.private_key_file, MAX_SECRET_BYTES)
        self._assertion_key = certificate_key(certificate, key)
        return self

    @property
    def client_secret(self) -> str | None:
        return None if self._client_secret is None else self._client_secret.get_secret_value()

    @property
    def assertion_key(self) -> SigningKey | None:
        """The certificate's key that signs client assertions; None with a client secret."""
        return self._assertion_key

    def secrets(self) -> list[str]:
        key = self._assertion_key
        return [s for s in (self.client_secret, key.secret if key else None) if s]


class RefreshToken(StrictModel):
    """The refresh token grant (RFC 6749 6): a user's delegated token, as Google's and
    Microsoft's delegated flows give one after the user consented once. The token is read
    from ``refresh_token_file`` at each fetch, and a new one the server returns (rotation)
    is written back to it (see :mod:`mail_exporter.oauth2.sources`)."""

    token_url: TokenURL
    client_id: Text
    client_secret_file: ConfigPath | None = None
    client_secret_env: str | None = None
    refresh_token_file: ConfigPath
    scope: Text | None = None
    _client_secret: SecretStr | None = PrivateAttr(default=None)
    _refresh_token: SecretStr = PrivateAttr(default=SecretStr(""))

    @model_validator(mode="after")
    def _load_secrets(self) -> RefreshToken:
        self._client_secret = _secret(
            "client_secret_file", self.client_secret_file,
            "client_secret_env", self.client_secret_env, required=False,
        )  # fmt: skip
        token = secret_from_file("refresh_token_file", self.refresh_token_file).strip()
        if not token:
            raise ValueError(f"refresh_token_file {str(self.refresh_token_file)!r} is empty")
        self._refresh_token = SecretStr(token)
        return self

    @property
    def client_secret(self) -> str | None:
        return None if self._client_secret is None else self._client_secret.get_secret_value()

    @property
    def refresh_token(self) -> str:
        """The refresh token as the file held it when the config was read."""
        return self._refresh_token.get_secret_value()

    def secrets(self) -> list[str]:
        return [s for s in (self.client_secret, self.refresh_token) if s]


class JWTBearer(StrictModel):
    """The JWT bearer grant (RFC 7523 2.1): an assertion signed with a service account's
    key, as Google's domain-wide delegation takes it (``subject`` is the user to act as;
    without it the token is the service account's own). The key comes from a Google
    service account's JSON key file, or from ``issuer`` and ``private_key_file``; ``scope``
    goes into the assertion's ``scope`` claim, where Google reads it."""

    token_url: TokenURL
    service_account_file: ConfigPath | None = None
    issuer: Text | None = None
    private_key_file: ConfigPath | None = None
    subject: Text | None = None
    scope: Text
    _account: ServiceAccount | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_key(self) -> JWTBearer:
        own_key = self.issuer is not None or self.private_key_file is not None
        if (self.service_account_file is not None) == own_key:
            raise ValueError("set one of service_account_file, or issuer with private_key_file")
        if self.service_account_file is not None:
            content = read_named_file(
                "service_account_file", self.service_account_file, MAX_SECRET_BYTES
            )
            self._account = service_account(content)
            return self
        if self.issuer is None or self.private_key_file is None:
            raise ValueError("issuer and private_key_file go together")
        key = read_named_file("private_key_file", self.private_key_file, MAX_SECRET_BYTES)
        self._account = ServiceAccount(self.issuer, issuer_key(key, "private_key_file"))
        return self

    @property
    def account(self) -> ServiceAccount:
        """Who signs (``iss``) and with which key."""
        assert self._account is not None, "set by validation"
        return self._account

    def secrets(self) -> list[str]:
        return [self.account.key.secret]


def _argument(value: str) -> str:
    if "\0" in value:
        raise ValueError("a token_command argument must not contain NUL")
    return value


class OAuth2Config(StrictModel):
    """``auth.oauth2``: exactly one token source."""

    client_credentials: ClientCredentials | None = None
    refresh_token: RefreshToken | None = None
    jwt_bearer: JWTBearer | None = None
    token_command: list[Annotated[str, Field(min_length=1), AfterValidator(_argument)]] | None = (
        Field(default=None, min_length=1)
    )
    token_file: ConfigPath | None = None
    _token_file_content: SecretStr = PrivateAttr(default=SecretStr(""))
    _identity: str = PrivateAttr(default="")
    _name: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _one_source(self) -> OAuth2Config:
        given = [name for name in SOURCE_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one token source: {', '.join(SOURCE_KINDS)}"
                + (f" (found {' and '.join(given)})" if given else "")
            )
        if self.token_file is not None:  # its token is checked at each read, not here:
            # the helper that writes it may not have written one yet
            content = read_named_file("token_file", self.token_file, MAX_SECRET_BYTES)
            self._token_file_content = SecretStr(content.decode("utf-8", "replace").strip())
        fingerprint = hashlib.sha256(self.model_dump_json().encode())
        for secret in self.secrets():
            fingerprint.update(b"\0" + secret.encode())
        self._identity = fingerprint.hexdigest()
        self._name = given[0]
        return self

    @property
    def kind(self) -> str:
        """Which source this is: one of :data:`SOURCE_KINDS`."""
        return next(name for name in SOURCE_KINDS if getattr(self, name) is not None)

    @property
    def identity(self) -> str:
        """The same for sources with the same settings and secrets, which share tokens."""
        return self._identity

    @property
    def name(self) -> str:
        """The ``source`` label: the module it belongs to (its kind until a config names it)."""
        return self._name

    def named(self, name: str) -> None:
        """Called by the config that holds it: :meth:`name` is ``name`` from now on."""
        self._name = name

    def secrets(self) -> list[str]:
        """Every secret it read, so logs can redact them."""
        for section in (self.client_credentials, self.refresh_token, self.jwt_bearer):
            if section is not None:
                return section.secrets()
        content = self._token_file_content.get_secret_value()
        return [content] if content else []


SOURCE_KINDS: Final = (
    "client_credentials",
    "refresh_token",
    "jwt_bearer",
    "token_command",
    "token_file",
)
