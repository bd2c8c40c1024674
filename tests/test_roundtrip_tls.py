"""The round trip's TLS: server names as the probes take them (a trailing dot is the same name)."""

from __future__ import annotations

import asyncio
import time

from mail_exporter.config import ModuleConfig
from mail_exporter.roundtrip.message import build_message
from mail_exporter.roundtrip.send import submit
from mail_exporter.targets import parse_address
from tests.realservers.pki import PKI
from tests.scripted import Handler, scripted_server, send, server_context

SENDER = "probe@test.local"


def smtp_submission(heard: list[str], extensions: list[str]) -> Handler:
    """An SMTP server that offers ``extensions`` (STARTTLS is not among them) and takes
    every message; the verbs it heard go into ``heard``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 mx.test ESMTP")
        while line := (await reader.readline()).decode().strip():
            verb = line.split()[0].upper()
            heard.append(verb)
            if verb == "EHLO":
                await send(writer, "250-mx.test", *(f"250-{e}" for e in extensions), "250 8BITMIME")
            elif verb == "AUTH":
                await send(writer, "235 2.7.0 Authentication successful")
            elif verb == "DATA":
                await send(writer, "354 go ahead")
                while (await reader.readline()).rstrip(b"\r\n") != b".":
                    pass
                await send(writer, "250 2.0.0 queued")
            elif verb == "QUIT":
                await send(writer, "221 2.0.0 bye")
                return
            else:
                await send(writer, "250 2.0.0 ok")

    return handler


async def submit_to(address: str, module: ModuleConfig) -> None:
    message = build_message("tls", SENDER, SENDER, "token", time.time())
    await submit(parse_address(address), module, message, SENDER, SENDER)


async def test_sender_takes_a_server_name_with_a_trailing_dot(pki: PKI) -> None:
    seen: list[str | None] = []
    context = server_context(pki.server_cert, pki.server_key)
    context.sni_callback = lambda connection, name, ctx: seen.append(name)
    tls_config = {"ca_file": str(pki.ca_file), "server_name": "localhost."}
    module = ModuleConfig.model_validate(
        {"protocol": "smtp", "tls": "implicit", "tls_config": tls_config}
    )
    heard: list[str] = []
    async with scripted_server(smtp_submission(heard, []), context) as address:
        await submit_to(address, module)
    assert seen == ["localhost"]  # RFC 6066 3: SNI carries no trailing dot
    assert heard[-1] == "QUIT"
