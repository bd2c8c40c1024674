"""A small OAuth2 authorization server on 127.0.0.1 for the token sources and Dovecot's
``oauth2`` passdb: a token endpoint, an introspection endpoint, and hostile answers.

The token endpoint (``POST /token``, RFC 6749 3.2, form-encoded) grants:

- ``client_credentials``: the client authenticates with its secret (in the form, or
  HTTP Basic) or with a client assertion (RFC 7523 2.2, ``private_key_jwt``): an RS256
  JWT whose header names a registered certificate by ``x5t#S256``, verified with that
  certificate's key, with ``iss`` and ``sub`` the client id, ``aud`` this endpoint's URL,
  an ``exp`` to come and a ``jti`` never seen before;
- ``refresh_token``: rotating, as Microsoft does: each use answers a new refresh token
  and the one used is refused from then on (``invalid_grant``);
- ``urn:ietf:params:oauth:grant-type:jwt-bearer`` (RFC 7523 2.1): an RS256 assertion
  verified with the public key registered for its ``iss``, ``aud`` this endpoint's URL, a
  ``scope`` claim, the token issued for ``sub`` when there is one, else for ``iss``.

Access tokens are opaque random strings, or RS256 JWTs of the server's own key
(``jwt_access_tokens``), living ``lifetime`` seconds. Refusals are RFC 6749 5.2 error
JSON; the ``error_description`` of a wrong client secret quotes the secret it was sent,
as a careless server might, so that tests see the client cut it out of what it shows.

The introspection endpoint (``POST /introspect``, RFC 7662: form field ``token``) is
what Dovecot 2.3's ``passdb oauth2`` calls with ``introspection_mode = post``; it also
takes ``Authorization: Bearer`` (``introspection_mode = auth``). It answers
``{"active": true, "username": ..., "email": ..., "exp": ...}`` for a token it issued
that is neither expired nor revoked, else ``{"active": false}``; so a Dovecot config has
``username_attribute = username``, ``active_attribute = active``, ``active_value = true``
and ``force_introspection = yes`` (``Dovecot(..., oauth2_introspection_url=...)`` writes
them; Dovecot 2.3.19 then refuses a token for another user and a revoked one).

``misbehave`` makes the token endpoint hang (until the server stops, at most
:data:`HANG_SECONDS`), answer 2 MiB, redirect, or answer 200 with HTML, with JSON nested
half a million deep, or with a token
that must not be used (of type ``mac``, with a line break, with an ``expires_in`` that is
no number). ``requests``
counts the token requests by grant type. The server runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.realservers.loopback_http import LoopbackHTTP
from tests.realservers.pki import write_cert, write_key

HANG_SECONDS = 60.0
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

Misbehaviour = Literal[
    "hang", "oversize", "redirect", "html", "deep", "mac", "line_break", "bad_expiry"
]
_ODD_TOKENS: dict[str, dict[str, object]] = {
    "mac": {"access_token": "at-1", "token_type": "mac", "expires_in": 60},
    "line_break": {"access_token": "at-1\r\na2 LOGOUT", "token_type": "Bearer"},
    "bad_expiry": {"access_token": "at-1", "token_type": "Bearer", "expires_in": "soon"},
}
"""200 answers with a token that must not be used."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Refused(Exception):
    """An OAuth2 error answer (RFC 6749 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def verified_jwt(token: str, key: rsa.RSAPublicKey) -> dict[str, object]:
    """The claims of an RS256 JWT whose signature ``key`` verifies; Refused otherwise."""
    try:
        header_part, claims_part, signature_part = token.split(".")
        header = json.loads(_unb64url(header_part))
        claims = json.loads(_unb64url(claims_part))
        signature = _unb64url(signature_part)
    except (ValueError, binascii.Error):
        raise Refused("invalid_grant", "assertion is not a JWT") from None
    if header.get("alg") != "RS256":
        raise Refused("invalid_grant", f"alg {header.get('alg')} is not RS256")
    try:
        key.verify(
            signature, f"{header_part}.{claims_part}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        raise Refused("invalid_grant", "assertion signature does not verify") from None
    if not isinstance(claims, dict):
        raise Refused("invalid_grant", "assertion claims are not an object")
    return claims


def jwt_header(token: str) -> dict[str, object]:
    header = json.loads(_unb64url(token.split(".")[0]))
    assert isinstance(header, dict)
    return header


@dataclass
class Issued:
    """An access token the server gave."""

    username: str
    expires_at: float
    client_id: str
    grant: str


@dataclass
class Client:
    """A registered client: its secret or certificate, and the mailbox its tokens are for."""

    username: str
    secret: str | None = None
    certificate: x509.Certificate | None = None


@dataclass
class TokenServer:
    lifetime: float = 3600.0
    jwt_access_tokens: bool = False
    misbehave: Misbehaviour | None = None
    clients: dict[str, Client] = field(default_factory=dict)
    issuers: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    refresh_tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Live refresh tokens: (client id, username) of each."""
    issued: dict[str, Issued] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    _seen_jti: set[str] = field(default_factory=set)
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _http: LoopbackHTTP = field(default_factory=lambda: LoopbackHTTP("token server"))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- registration -----------------------------------------------------------------

    def add_client(
        self,
        client_id: str,
        username: str,
        secret: str | None = None,
        certificate: x509.Certificate | None = None,
    ) -> None:
        self.clients[client_id] = Client(username, secret, certificate)

    def add_refresh_token(self, client_id: str, username: str) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        with self._lock:
            self.refresh_tokens[token] = (client_id, username)
        return token

    def add_issuer(self, issuer: str, key: rsa.RSAPublicKey) -> None:
        self.issuers[issuer] = key

    def revoke(self, access_token: str) -> None:
        with self._lock:
            self.issued.pop(access_token, None)

    def active(self, access_token: str) -> Issued | None:
        with self._lock:
            issued = self.issued.get(access_token)
        return issued if issued is not None and issued.expires_at > time.time() else None

    # --- addresses and life -----------------------------------------------------------

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def introspection_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/introspect"

    def start(self) -> TokenServer:
        self._http.start(self._application)
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/introspect", self._introspect)
        return app

    # --- the endpoints ----------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        grant = str(form.get("grant_type", ""))
        with self._lock:
            self.requests[grant] += 1
        if self.misbehave is not None:
            return await self._misbehaviour()
        fields = {key: str(value) for key, value in form.items()}
        try:
            if grant == "client_credentials":
                answer = self._client_credentials(fields, request.headers.get("Authorization"))
            elif grant == "refresh_token":
                answer = self._refresh(fields)
            elif grant == JWT_BEARER:
                answer = self._jwt_bearer(fields)
            else:
                raise Refused("unsupported_grant_type", f"grant_type {grant!r} is not supported")
        except Refused as refused:
            body = {"error": refused.error, "error_description": refused.description}
            return web.json_response(body, status=refused.status)
        return web.json_response(answer)

    async def _misbehaviour(self) -> web.StreamResponse:
        if self.misbehave == "hang":
            assert self._http.released is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._http.released.wait(), HANG_SECONDS)
            return web.Response(status=503)
        if self.misbehave == "oversize":
            return web.Response(body=b"{" + b" " * (2 * 1024 * 1024) + b"}")
        if self.misbehave == "deep":  # JSON nested past any parser's recursion limit
            return web.Response(body=b"[" * 500_000, content_type="application/json")
        if self.misbehave == "redirect":
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/elsewhere")
        if self.misbehave in _ODD_TOKENS:
            return web.json_response(_ODD_TOKENS[self.misbehave])
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    async def _introspect(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", ""))
        bearer = request.headers.get("Authorization", "")
        if not token and bearer.startswith("Bearer "):
            token = bearer.removeprefix("Bearer ")
        issued = self.active(token)
        if issued is None:
            return web.json_response({"active": False})
        return web.json_response(
            {"active": True, "username": issued.username, "email": issued.username,
             "client_id": issued.client_id, "exp": int(issued.expires_at)}
        )  # fmt: skip

    # --- the grants -------------------------------------------------------------------

    def _issue(self, username: str, client_id: str, grant: str) -> dict[str, object]:
        expires_at = time.time() + self.lifetime
        if self.jwt_access_tokens:
            claims = {"sub": username, "exp": int(expires_at), "jti": secrets.token_hex(8)}
            token = _signed(claims, self._key)
        else:
            token = "at-" + secrets.token_urlsafe(32)
        with self._lock:
            self.issued[token] = Issued(username, expires_at, client_id, grant)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}

    def _client(self, client_id: str) -> Client:
        client = self.clients.get(client_id)
        if client is None:
            raise Refused("invalid_client", f"unknown client {client_id!r}", 401)
        return client

    def _client_credentials(
        self, form: dict[str, str], authorization: str | None
    ) -> dict[str, object]:
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            decoded = base64.b64decode(authorization.removeprefix("Basic ")).decode()
            client_id, _, secret = decoded.partition(":")
        client = self._client(client_id)
        if "scope" not in form:
            raise Refused("invalid_scope", "scope is required")
        if form.get("client_assertion_type") == CLIENT_ASSERTION:
            self._check_client_assertion(client_id, client, form.get("client_assertion", ""))
        elif client.secret is None or secret != client.secret:
            raise Refused(
                "invalid_client", f"Invalid client secret provided: {secret} is not it", 401
            )
        return self._issue(client.username, client_id, "client_credentials")

    def _check_client_assertion(self, client_id: str, client: Client, assertion: str) -> None:
        if client.certificate is None:
            raise Refused("invalid_client", "no certificate registered", 401)
        der = client.certificate.public_bytes(serialization.Encoding.DER)
        thumbprint = _b64url(_sha256(der))
        try:
            header = jwt_header(assertion)
        except (ValueError, binascii.Error):
            raise Refused("invalid_client", "client_assertion is not a JWT", 401) from None
        if header.get("x5t#S256") != thumbprint:
            raise Refused("invalid_client", "x5t#S256 names no registered certificate", 401)
        public_key = client.certificate.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        try:
            claims = verified_jwt(assertion, public_key)
        except Refused as refused:
            raise Refused("invalid_client", refused.description, 401) from None
        self._check_times(claims, "invalid_client")
        if claims.get("aud") != self.token_url:
            raise Refused("invalid_client", f"aud {claims.get('aud')} is not {self.token_url}", 401)
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise Refused("invalid_client", "iss and sub must be the client id", 401)
        jti = claims.get("jti")
        if not isinstance(jti, str) or jti in self._seen_jti:
            raise Refused("invalid_client", "jti missing or replayed", 401)
        self._seen_jti.add(jti)

    def _check_times(self, claims: dict[str, object], error: str) -> None:
        expires, issued = claims.get("exp"), claims.get("iat")
        if not isinstance(expires, int) or expires <= time.time():
            raise Refused(error, "assertion expired or without exp")
        if not isinstance(issued, int) or issued > time.time() + 60:
            raise Refused(error, "assertion iat missing or in the future")

    def _refresh(self, form: dict[str, str]) -> dict[str, object]:
        used = form.get("refresh_token", "")
        with self._lock:
            owner = self.refresh_tokens.get(used)
        if owner is None:
            raise Refused(
                "invalid_grant", "AADSTS70000: the refresh token was already used or revoked"
            )
        client_id, username = owner
        if form.get("client_id") != client_id:
            raise Refused("invalid_grant", "the refresh token belongs to another client")
        client = self.clients.get(client_id)
        if client is not None and client.secret not in (None, form.get("client_secret")):
            raise Refused("invalid_client", "wrong client secret", 401)
        with self._lock:
            if self.refresh_tokens.pop(used, None) is None:  # used meanwhile
                raise Refused("invalid_grant", "AADSTS70000: the refresh token was already used")
        answer = self._issue(username, client_id, "refresh_token")
        answer["refresh_token"] = self.add_refresh_token(client_id, username)
        return answer

    def _jwt_bearer(self, form: dict[str, str]) -> dict[str, object]:
        assertion = form.get("assertion", "")
        try:
            claims = json.loads(_unb64url(assertion.split(".")[1]))
        except (ValueError, IndexError, binascii.Error):
            raise Refused("invalid_grant", "assertion is not a JWT") from None
        issuer = claims.get("iss") if isinstance(claims, dict) else None
        key = self.issuers.get(issuer) if isinstance(issuer, str) else None
        if key is None:
            raise Refused("invalid_grant", f"unknown issuer {issuer!r}")
        claims = verified_jwt(assertion, key)
        self._check_times(claims, "invalid_grant")
        if claims.get("aud") != self.token_url:
            raise Refused("invalid_grant", f"aud {claims.get('aud')} is not {self.token_url}")
        if not isinstance(claims.get("scope"), str):
            raise Refused("invalid_scope", "the assertion has no scope claim")
        subject = claims.get("sub")
        username = subject if isinstance(subject, str) else str(issuer)
        return self._issue(username, str(issuer), JWT_BEARER)


def _sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def _signed(claims: dict[str, object], key: rsa.RSAPrivateKey) -> str:
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{_b64url(signature)}"


# --- credentials for the clients --------------------------------------------------------


@dataclass(frozen=True)
class AppCertificate:
    """An application's self-signed certificate and its RSA key, as PEM files."""

    certificate_file: Path
    private_key_file: Path
    certificate: x509.Certificate


def new_app_certificate(directory: Path, name: str, bits: int = 2048) -> AppCertificate:
    """A self-signed certificate for ``name`` (as Entra ID takes one uploaded to an app)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return AppCertificate(
        write_cert(directory / f"{name}.crt", certificate),
        write_key(directory / f"{name}.key", key),
        certificate,
    )


def secret_file(directory: Path, name: str, content: str) -> Path:
    """A secret file as a token source reads one: ``content`` and a newline, mode 0600."""
    path = directory / name
    path.write_text(content + "\n")
    path.chmod(0o600)
    return path


def new_service_account(path: Path, email: str) -> rsa.RSAPublicKey:
    """A Google service account JSON key file at ``path``; its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(
        json.dumps(
            {"type": "service_account", "project_id": "probe", "private_key_id": "k1",
             "private_key": pem, "client_email": email, "client_id": "1",
             "token_uri": "https://oauth2.googleapis.com/token"}
        )
    )  # fmt: skip
    path.chmod(0o600)
    return key.public_key()
