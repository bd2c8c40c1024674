"""Connecting the round trip's SMTP and IMAP clients the way the probes connect.

The TCP connection follows the module's ``preferred_ip_protocol`` and
``ip_protocol_fallback``; TLS uses the probes' permissive client context, and the
certificate is then verified against ``tls_config`` (``ca_file``, ``server_name``),
failing the step where the module verifies (:attr:`ModuleConfig.verifies`). The server
name is also sent as SNI (without a trailing dot, as the probes send it). Verification
happens before any password is sent, and no password is sent without TLS unless the module allows it
(:func:`~mail_exporter.probes.session.plaintext_refusal`). :func:`bounded` gives every
step of a mailbox session its time limit and its failure stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator

from mail_exporter import tls_facts
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.printable import printable
from mail_exporter.roundtrip.outcome import RoundTripFailure, Stage
from mail_exporter.targets import Address


def server_name(address: Address, module: ModuleConfig) -> str:
    """The name the certificate must carry and SNI sends: ``tls_config.server_name`` or
    the host, without a trailing dot."""
    return tls_facts.tls_name(module.tls_config.server_name or address.host)


async def open_socket(address: Address, module: ModuleConfig) -> socket.socket:
    """A connected non-blocking TCP socket; ``OSError`` when no address answers."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    if not address.is_ip:
        preferred = socket.AF_INET6 if module.preferred_ip_protocol == "ip6" else socket.AF_INET
        infos.sort(key=lambda info: info[0] != preferred)
        if not module.ip_protocol_fallback:
            infos = [info for info in infos if info[0] == preferred]
    error = OSError(f"{address.host} has no {module.preferred_ip_protocol} address")
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sockaddr)
        except OSError as refused:
            sock.close()
            error = refused
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error


def verify_server(
    ssl_object: ssl.SSLObject | None, address: Address, module: ModuleConfig, stage: Stage
) -> None:
    """Fail ``stage`` unless the certificate verifies or the module skips verification."""
    problem = certificate_problem(ssl_object, address, module)
    if problem is not None:
        raise RoundTripFailure(stage, problem)


def certificate_problem(
    ssl_object: ssl.SSLObject | None, address: Address, module: ModuleConfig
) -> str | None:
    """Why the session may not go on: no TLS, or a certificate that does not verify while
    the module does not skip verification; None when it may."""
    if ssl_object is None:
        return "no TLS session after the handshake"
    settings = module.tls_config
    ca_file = str(settings.ca_file) if settings.ca_file else None
    facts = tls_facts.session_facts(ssl_object, server_name(address, module), ca_file)
    if not facts.verified and module.verifies:
        return f"certificate not verified: {facts.verify_error}"
    return None


@contextlib.asynccontextmanager
async def bounded(
    stage: Stage, what: str, seconds: float, errors: tuple[type[Exception], ...] = ()
) -> AsyncIterator[None]:
    """Bound the block by ``seconds``; a timeout, a connection error or one of ``errors``
    becomes a :class:`RoundTripFailure` of ``stage``."""
    caught: tuple[type[Exception], ...] = (OSError, ssl.SSLError, EOFError, *errors)
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise RoundTripFailure(stage, f"{what}: no answer within {seconds:.3g}s") from None
    except caught as error:
        raise RoundTripFailure(stage, f"{what}: {printable(_reason(error))}") from None


def _reason(error: Exception) -> str:
    """A system error as the system says it ("Connection refused", as a probe says it, not
    asyncio's "[Errno 111] Connect call failed (...)"), a resolver's in its own words;
    anything else (TLS errors, whose errno is OpenSSL's) as it reads."""
    if isinstance(error, OSError) and not isinstance(error, ssl.SSLError) and error.errno:
        return os.strerror(error.errno) if error.errno > 0 else error.strerror or str(error)
    return str(error) or repr(error)
