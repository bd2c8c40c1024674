"""Submitting the test message over SMTP with the route's send module (aiosmtplib).

TLS follows the module: ``implicit`` (port 465), ``starttls`` (fails when STARTTLS is
missing unless ``require_tls: false``, and even then when the module logs in without
``allow_plaintext_auth``) or ``none``. The certificate is verified before the login,
and the login uses the module's mechanism (``auto``: PLAIN, or LOGIN where only that
is offered, as the SMTP probe does), tried once. The whole submission is
bounded by the module's ``timeout``. A refused login is ``send_auth``; anything else
that stops the submission is ``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from email.message import EmailMessage

import aiosmtplib

from mail_exporter import tls_facts
from mail_exporter.config.probes import AuthConfig, ModuleConfig, SMTPModule
from mail_exporter.printable import printable
from mail_exporter.probes.session import plaintext_refusal
from mail_exporter.roundtrip.connection import open_socket, server_name, verify_server
from mail_exporter.roundtrip.outcome import RoundTripFailure, Stage
from mail_exporter.targets import Address

logger = logging.getLogger(__name__)


async def submit(
    address: Address, module: ModuleConfig, message: EmailMessage, sender: str, recipient: str
) -> None:
    """Hand ``message`` to the server for ``recipient``; :class:`RoundTripFailure` if refused."""
    timeout = module.timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            await _submit(address, module, message, sender, recipient)
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
    address: Address, module: ModuleConfig, message: EmailMessage, sender: str, recipient: str
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
            await _login(client, module.auth)
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


async def _login(client: aiosmtplib.SMTP, auth: AuthConfig) -> None:
    if not client.supports_extension("auth"):
        raise RoundTripFailure(Stage.SEND_AUTH, "server does not offer AUTH on this connection")
    offered = client.server_auth_methods
    mechanism = auth.mechanism
    if mechanism == "auto":  # one try only: a retry with the next mechanism doubles the
        # failed logins a wrong password leaves in the server's log (and in fail2ban's count)
        mechanism = "plain" if "plain" in offered or "login" not in offered else "login"
    if mechanism not in offered:
        raise RoundTripFailure(Stage.SEND_AUTH, f"server does not offer AUTH {mechanism.upper()}")
    method = client.auth_plain if mechanism == "plain" else client.auth_login
    await method(auth.username, auth.password)
