"""Scripted loopback servers for behaviour real mail servers won't produce.

Each server runs a coroutine per connection on 127.0.0.1 (or ::1) port 0 and
can speak implicit TLS or upgrade with :func:`upgrade`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@asynccontextmanager
async def scripted_server(
    handler: Handler, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serve ``handler`` and yield the ``HOST:PORT`` to probe."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away or the test ended: the probe's business, not the script's
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, host, 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that accepts and never says a word: a hung daemon."""
    await asyncio.sleep(60)


async def send(writer: asyncio.StreamWriter, *lines: str, ending: bytes = b"\r\n") -> None:
    for line in lines:
        writer.write(line.encode() + ending)
    await writer.drain()


async def upgrade(writer: asyncio.StreamWriter, context: ssl.SSLContext) -> None:
    """Server side of STARTTLS."""
    await writer.start_tls(context)


def smtp_script(
    banner: list[str],
    ehlo: list[str] | None = None,
    ending: bytes = b"\r\n",
    tls: ssl.SSLContext | None = None,
) -> Handler:
    """A small SMTP server: fixed banner and EHLO reply, STARTTLS when ``tls`` is given, QUIT."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, *banner, ending=ending)
        while line := await reader.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                await send(writer, *(ehlo or ["250 ok"]), ending=ending)
            elif verb == "STARTTLS" and tls is not None:
                await send(writer, "220 go ahead", ending=ending)
                await upgrade(writer, tls)
            elif verb == "QUIT":
                await send(writer, "221 bye", ending=ending)
                return
            else:
                await send(writer, "502 not implemented", ending=ending)

    return handler
