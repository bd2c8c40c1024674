"""Submitting the test message over SMTP with the route's send module (aiosmtplib).

TLS follows the module: ``implicit`` (port 465), ``starttls`` (fails when STARTTLS is
missing unless ``require_tls: false``, and even then when the module logs in without
``allow_plaintext_auth``) or ``none``. The certificate is verified before the login,
and the login uses the module's mechanism (``auto``: PLAIN, or LOGIN where only that
is offered, as the SMTP probe does), tried once. XOAUTH2 and OAUTHBEARER log in with
the token source's access token as the SMTP probe does (:mod:`~mail_exporter.probes.oauth2_sasl`,
the initial response when it fits the command line). The whole submission is
bounded by the module's ``timeout``. A refused login, or no access token for it, is
``send_auth``; anything else that stops the submission is ``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from email.message import EmailMessage

import aiosmtplib

from mail_exporter import tls_facts
from mail_exporter.config.probes import OAUTH2_MECHANISMS, AuthConfig, ModuleConfig, SMTPModule
from mail_exporter.printable import printable
from mail_exporter.probes import ProbeMemory
from mail_exporter.probes.access_token import access_token_for, token_deadline
from mail_exporter.probes.oauth2_sasl import LoginRefused, Reply, client_message, fits, oauth2_login
from mail_exporter.probes.session import ProbeFailure, plaintext_refusal
from mail_exporter.probes.smtp import MAX_COMMAND_OCTETS
from mail_exporter.roundtrip.connection import open_socket, server_name, verify_server
from mail_exporter.roundtrip.outcome import RoundTripFailure, Stage
from mail_exporter.targets import Address

logger = logging.getLogger(__name__)


async def submit(
    address: Address,
    module: ModuleConfig,
    message: EmailMessage,
    sender: str,
    recipient: str,
    memory: ProbeMemory,
) -> None:
    """Hand ``message`` to the server for ``recipient``; :class:`RoundTripFailure` if refused.
    An OAuth2 login's token comes from ``memory``'s broker."""
    timeout = module.timeout_seconds
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            await _submit(address, module, message, sender, recipient, memory, deadline)
    except TimeoutError:
        raise RoundTripFailure(Stage.SEND, f"no answer within {timeout:.3g}s") from None
    except aiosmtplib.SMTPAuthenticationError as error:
        raise RoundTripFailure(
            Stage.SEND_AUTH, f"login refused: {error.code} {printable(error.message)}"
        ) from None
    except aiosmtplib.SMTPResponseException as error:
        raise RoundTripFailure(Stage.SEND, f"{error.code} {printable(error.message)}") from None
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as error:
        raise RoundTripFailure(Stage.SEND, printable(str(error) or repr(error))) from None


async def _submit(
    address: Address,
    module: ModuleConfig,
    message: EmailMessage,
    sender: str,
    recipient: str,
    memory: ProbeMemory,
    deadline: float,
) -> None:
    assert isinstance(module, SMTPModule), "a route's send module has protocol smtp"
    sock = await open_socket(address, module)
    client = aiosmtplib.SMTP(
        hostname=server_name(address, module),  # with sock: the TLS server name only
        sock=sock,
        local_hostname=module.smtp.ehlo_name,
        timeout=module.timeout_seconds,
        use_tls=module.tls == "implicit",
        start_tls=False,
        tls_context=tls_facts.client_context(),
    )
    try:
        await client.connect()
        if module.tls == "implicit":
            verify_server(client.get_transport_info("ssl_object"), address, module, Stage.SEND)
        await client.ehlo()
        if module.tls == "starttls":
            await _starttls(client, address, module)
        if module.auth is not None:
            await _login(client, module.auth, address, memory, deadline)
        await client.send_message(message, sender=sender, recipients=[recipient])
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()  # the message is accepted: a messy goodbye changes nothing
    finally:
        client.close()


async def _starttls(client: aiosmtplib.SMTP, address: Address, module: ModuleConfig) -> None:
    if not client.supports_extension("starttls"):
        refusal = plaintext_refusal(module, "STARTTLS")
        if refusal is not None:
            raise RoundTripFailure(Stage.SEND, refusal)
        logger.debug("%s does not offer STARTTLS; sending in plaintext as allowed", address)
        return
    await client.starttls()
    verify_server(client.get_transport_info("ssl_object"), address, module, Stage.SEND)
    await client.ehlo()


async def _login(
    client: aiosmtplib.SMTP,
    auth: AuthConfig,
    address: Address,
    memory: ProbeMemory,
    deadline: float,
) -> None:
    if not client.supports_extension("auth"):
        raise RoundTripFailure(Stage.SEND_AUTH, "server does not offer AUTH on this connection")
    offered = client.server_auth_methods
    mechanism = auth.mechanism
    if mechanism == "auto":  # one try only: a retry with the next mechanism doubles the
        # failed logins a wrong password leaves in the server's log (and in fail2ban's count)
        mechanism = "plain" if "plain" in offered or "login" not in offered else "login"
    if mechanism not in offered:
        raise RoundTripFailure(Stage.SEND_AUTH, f"server does not offer AUTH {mechanism.upper()}")
    if mechanism in OAUTH2_MECHANISMS:
        await _oauth2_login(client, auth, address, memory, deadline)
        return
    method = client.auth_plain if mechanism == "plain" else client.auth_login
    await method(auth.username, auth.password)


async def _oauth2_login(
    client: aiosmtplib.SMTP,
    auth: AuthConfig,
    address: Address,
    memory: ProbeMemory,
    deadline: float,
) -> None:
    try:
        token = await access_token_for(auth, memory, token_deadline(deadline))
    except ProbeFailure as failure:
        raise RoundTripFailure(Stage.SEND_AUTH, f"no access token: {failure.detail}") from None
    message = client_message(auth.mechanism, auth.username, token, address.host, address.port)
    initial = fits(auth.mechanism.upper(), message, MAX_COMMAND_OCTETS)
    try:
        await oauth2_login(_SaslSteps(client), auth.mechanism, message, initial)
    except LoginRefused as refused:
        raise RoundTripFailure(Stage.SEND_AUTH, f"login refused: {refused.detail}") from None


class _SaslSteps:
    """SASL over aiosmtplib: AUTH, then a line per step, 334 a challenge."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self._client = client

    async def begin(self, mechanism: str, initial: str | None) -> Reply:
        words = [b"AUTH", mechanism.encode()] + ([] if initial is None else [initial.encode()])
        return await self._step(*words)

    async def respond(self, line: str, secret: bool) -> Reply:
        return await self._step(line.encode())

    async def cancel(self) -> Reply:
        return await self._step(b"*")

    async def _step(self, *words: bytes) -> Reply:
        response = await self._client.execute_command(*words)
        if response.code == 334:
            return Reply(challenge=response.message.strip())
        text = f"{response.code} {printable(response.message)}"
        return Reply(accepted=response.code == 235, text=text)
