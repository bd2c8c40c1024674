"""An aiohttp application served on 127.0.0.1 from its own event loop in a thread: what
the scripted token server and the scripted Graph share.

Its own loop keeps the server answering while a test blocks (a synchronous client, a
``subprocess.run`` of the exporter). :attr:`LoopbackHTTP.released` is set first on stop,
so that a handler made to hang returns and the runner's cleanup does not wait for it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web


class LoopbackHTTP:
    def __init__(self, name: str) -> None:
        self._name = name
        self.port = 0
        self.released: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(
        self,
        application: Callable[[], Awaitable[web.Application]],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Serve what ``application`` builds (in the server's loop) on a free port."""
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve(application, ssl_context))
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        assert ready.wait(30), f"the {self._name} did not start"

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return
        assert self.released is not None
        loop.call_soon_threadsafe(self.released.set)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(30)
        loop.close()

    async def _serve(
        self,
        application: Callable[[], Awaitable[web.Application]],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.released = asyncio.Event()
        self._runner = web.AppRunner(await application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
