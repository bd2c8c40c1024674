"""HTTP endpoints: /, /metrics, /probe, /config, /config/example, /runbook, /-/healthy,
/-/ready and /-/reload (aiohttp).

/config/example is ``examples/mail_exporter.yml`` as shipped in the package (every key with
comments): the status page links to it where nothing is configured yet, and an installed
exporter has no source tree to look in.

/metrics renders in a worker thread so that collectors doing file or process
work never block the event loop, and it never waits on a network probe. It is gzipped
when the client accepts it (Prometheus does): with thousands of scheduled targets the
body is megabytes of repetitive text that level 1 shrinks about 16-fold, in a worker
thread (zlib lets go of the GIL while it compresses) and in a third of level 6's time
for a body a fifth larger. What has not changed since the last scrape is not compressed
again: the body is put together from parts compressed once (:mod:`mail_exporter.gzip_body`,
:mod:`mail_exporter.scheduler`). A plain scrape is written as it is rendered, in chunks
of 256 KiB, and never joined whole (17 MiB at 5,000 targets).

With ``basic_auth_users`` in the web config every endpoint but /-/healthy asks for a
password (401 with ``WWW-Authenticate: Basic``), unless the web config opens it
(``mail_exporter.unauthenticated_endpoints``; never /-/reload, which changes state).
/-/healthy stays open so that container and service-manager health checks need no
credentials; it tells nothing but that the process answers, and it is still behind
TLS and client certificates.
/probe probes only configured modules, only targets the allowlist allows, and takes
no credentials or TLS settings from the query; each refusal is counted by reason. A
module with credentials is used only on targets allowed explicitly (the module's own
scheduled targets, or an ``allowed_targets`` match), even with an empty allowlist: the
probe logs in, and whoever chooses the target would receive the password.

Pages show servers' words as they were said. Only what the exporter sends is masked,
where it is sent (a probe logs its login lines in a masked form). Replacing configured
passwords in served text would be an oracle: anyone choosing a /probe target could run
a server that says password guesses and watch which come back as a placeholder (and a
short password would show wherever its letters do). /config holds no password to hide.
Every response carries ``X-Content-Type-Options: nosniff``: a debug page quotes a
server, and no browser may take it for HTML.
Connections, request-head time and concurrent /probe runs are limited by
:mod:`mail_exporter.web_limits`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mail_exporter.basic_auth import HashingBusy
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.config.validation import ConfigError
from mail_exporter.durations import format_duration
from mail_exporter.exporter import Exporter, ProbeRefusal
from mail_exporter.exposition import registry_parts
from mail_exporter.gzip_body import compress, gzip_member
from mail_exporter.metrics import probe_text
from mail_exporter.probes import ProbeResult, run_probe
from mail_exporter.report import render_report
from mail_exporter.runbook import runbook_page
from mail_exporter.status_page import EXAMPLE_CONFIG_PATH, QUEUE_COLLECTORS, render_status_page
from mail_exporter.targets import Address, parse_address
from mail_exporter.web_limits import Rejection, WebLimits

logger = logging.getLogger(__name__)

EXPORTER_KEY = web.AppKey("exporter", Exporter)
LIMITS_KEY = web.AppKey("limits", WebLimits)
RENDERER_KEY = web.AppKey("renderer", ThreadPoolExecutor)
PROBE_PARAMETERS = frozenset({"target", "module", "debug"})
MINIMUM_BUDGET_SECONDS = 0.1
BASIC_CHALLENGE = 'Basic realm="mail_exporter", charset="UTF-8"'
PLAIN_CHUNK = 1 << 18


def _probe_text(result: ProbeResult) -> str:
    """The metrics of a single /probe result."""
    failures = {result.failure.reason.value: 1.0} if result.failure else {}
    last_success = time.time() if result.success else None
    return probe_text(("protocol",), [result.protocol], result, failures, last_success)


def _exporter(request: web.Request) -> Exporter:
    return request.app[EXPORTER_KEY]


async def metrics(request: web.Request) -> web.StreamResponse:
    """Self-metrics and collectors from the registry, rendered in a worker thread (collectors
    may read files or run programs), then the probe results, already rendered per target."""
    exporter = _exporter(request)
    headers = {hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST, hdrs.VARY: hdrs.ACCEPT_ENCODING}
    if accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, "")):
        body = await asyncio.to_thread(_gzipped_body, exporter)
        headers[hdrs.CONTENT_ENCODING] = "gzip"
        return web.Response(body=body, headers=headers)
    if request.method == hdrs.METH_HEAD:
        # A stream would write its body after the head of a HEAD answer, where the client
        # on a kept-alive connection reads it as the start of the next response.
        return web.Response(headers=headers)
    texts = await asyncio.to_thread(lambda: [text for text, _ in registry_parts(exporter.registry)])
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    for text in texts:  # a pass's rendered family may be megabytes: written a slice at a time
        for start in range(0, len(text), PLAIN_CHUNK):
            await response.write(memoryview(text)[start : start + PLAIN_CHUNK])
    # All in the one thread of the app's renderer: each thread that allocates keeps its
    # own malloc arena, and a scrape's chunks spread over the default pool's threads
    # held 17 MB more (5,000 targets).
    loop = asyncio.get_running_loop()
    chunks = _chunks(exporter.scheduler.render())
    while chunk := await loop.run_in_executor(request.app[RENDERER_KEY], next, chunks, b""):
        await response.write(chunk)
    await response.write_eof()
    return response


def _gzipped_body(exporter: Exporter) -> bytes:
    """The registry's families and the probe results, gzipped: the parts compressed
    already (a pass's rendered families, the buckets of targets without new results)
    are put in as they are (:mod:`mail_exporter.gzip_body`)."""
    parts = [
        part if part is not None else compress(text)
        for text, part in registry_parts(exporter.registry)
    ]
    return gzip_member([*parts, *exporter.scheduler.compressed()])


def _chunks(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The pieces joined in chunks of about ``PLAIN_CHUNK`` bytes: with thousands of
    targets the text is megabytes, never held whole."""
    chunk: list[bytes] = []
    size = 0
    for piece in pieces:
        chunk.append(piece)
        size += len(piece)
        if size >= PLAIN_CHUNK:
            yield b"".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield b"".join(chunk)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value (RFC 9110 12.5.3) takes gzip: named (or
    ``x-gzip``), or ``*`` without gzip refused, with a quality above 0."""
    qualities: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, parameters = item.partition(";")
        quality = 1.0
        name, _, value = parameters.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        qualities[coding.strip().lower()] = quality
    named = qualities.get("gzip", qualities.get("x-gzip"))
    return (named if named is not None else qualities.get("*", 0.0)) > 0.0


def _refused(
    request: web.Request,
    reason: ProbeRefusal,
    text: str,
    error: type[web.HTTPClientError] = web.HTTPBadRequest,
) -> web.HTTPClientError:
    """A /probe refusal to raise, counted in ``mail_exporter_probe_refused_total``."""
    _exporter(request).probe_refusals[reason] += 1
    logger.debug("/probe refused (%s): %s", reason.value, text)
    return error(text=text + "\n")


def _probe_budget(request: web.Request, module_timeout: float, offset: float) -> float:
    header = request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
    try:
        scrape_timeout = float(header) if header else None
    except ValueError:
        raise _refused(
            request,
            ProbeRefusal.BAD_REQUEST,
            f"invalid X-Prometheus-Scrape-Timeout-Seconds {header!r}",
        ) from None
    if scrape_timeout is None:
        return module_timeout
    budget = scrape_timeout - offset if scrape_timeout > offset else scrape_timeout
    return max(MINIMUM_BUDGET_SECONDS, min(module_timeout, budget))


async def probe(request: web.Request) -> web.Response:
    exporter = _exporter(request)
    config = exporter.config
    unknown = sorted(set(request.query) - PROBE_PARAMETERS)
    if unknown:
        raise _refused(
            request,
            ProbeRefusal.BAD_REQUEST,
            f"unknown parameter {unknown[0]!r}: /probe takes target, module and debug only "
            "(credentials and TLS settings come from the config file)",
        )
    module_name = request.query.get("module")
    if not module_name:
        raise _refused(request, ProbeRefusal.BAD_REQUEST, "module parameter is missing")
    module = config.modules.get(module_name)
    if module is None:
        # The names are not listed: they would tell anyone which modules there are to try.
        raise _refused(
            request,
            ProbeRefusal.UNKNOWN_MODULE,
            f"unknown module {module_name!r}: /probe runs the modules of the config file "
            "(see /config)",
        )
    target = request.query.get("target", "")
    try:
        address = parse_address(target)
    except ValueError as error:
        raise _refused(request, ProbeRefusal.BAD_REQUEST, f"target parameter: {error}") from None
    _check_target(request, module_name, module, address, target)
    budget = _probe_budget(request, module.timeout_seconds, config.global_.scrape_timeout_offset)
    result = await run_probe(address, module, budget, exporter.probe_memory)
    exposition = _probe_text(result)
    if request.query.get("debug", "").lower() == "true":
        text = render_report(str(address), module_name, result)
        text += f"\nTime budget: {format_duration(budget)}\n\nMetrics:\n{exposition}"
        return web.Response(text=text)
    return web.Response(text=exposition, content_type="text/plain", charset="utf-8")


def _check_target(
    request: web.Request, module_name: str, module: ModuleConfig, address: Address, target: str
) -> None:
    """Refuse a target /probe may not reach with this module.

    The module's own scheduled targets are always allowed (the exporter probes them
    anyway), then targets matching ``probe.allowed_targets``. An empty list allows any
    other target only to a module without credentials."""
    config = _exporter(request).config
    allowlist = config.probe.allowlist
    if config.schedules(module_name, address) or allowlist.matches(address.host):
        return
    if not allowlist.empty:
        raise _refused(
            request,
            ProbeRefusal.TARGET_NOT_ALLOWED,
            f"target {target!r} is not allowed: /probe only probes targets matching "
            "probe.allowed_targets and the targets scheduled with the module",
            web.HTTPForbidden,
        )
    if module.has_credentials:
        raise _refused(
            request,
            ProbeRefusal.CREDENTIALS_NOT_ALLOWED,
            f"module {module_name!r} logs in, so /probe uses it only on the targets scheduled "
            f"with it and on targets matching probe.allowed_targets; {target!r} is neither "
            "(add it to probe.allowed_targets to allow it)",
            web.HTTPForbidden,
        )
    if module.active_checks:
        raise _refused(
            request,
            ProbeRefusal.ACTIVE_CHECK_NOT_ALLOWED,
            f"module {module_name!r} runs active checks "
            f"({', '.join(module.active_checks)}), so /probe uses it only on the targets "
            f"scheduled with it and on targets matching probe.allowed_targets; {target!r} is "
            "neither (add it to probe.allowed_targets to allow it)",
            web.HTTPForbidden,
        )


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    if not _exporter(request).ready:
        raise web.HTTPServiceUnavailable(text="Not ready\n")
    return web.Response(text="Ready\n")


async def reload(request: web.Request) -> web.Response:
    exporter = _exporter(request)
    try:
        await exporter.reload()
    except ConfigError as error:
        raise web.HTTPInternalServerError(
            text=f"reload failed, running config kept:\n{error}\n"
        ) from None
    return web.Response(text="Reloaded\n")


async def landing(request: web.Request) -> web.Response:
    """The status page; the queue collectors it shows are asked in a worker thread."""
    exporter = _exporter(request)
    queues = await asyncio.to_thread(exporter.collectors.families_of, QUEUE_COLLECTORS)
    return web.Response(text=render_status_page(exporter, queues), content_type="text/html")


async def shown_config(request: web.Request) -> web.Response:
    return web.Response(text=_exporter(request).shown_config())


async def example_config(request: web.Request) -> web.Response:
    text = files("mail_exporter").joinpath("example_config.yml").read_text(encoding="utf-8")
    return web.Response(text=text)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The web config's checks: allowed client certificate names, then basic auth where the
    web config asks for it (503 at once while too many password checks wait)."""
    web_config = _exporter(request).web_config
    transport = request.transport
    if not web_config.allows_peer(transport.get_extra_info("peercert") if transport else None):
        raise web.HTTPForbidden(text="client certificate not allowed\n")
    resource = request.match_info.route.resource
    users = web_config.password_check(resource.canonical if resource else None)
    if users is not None:
        try:
            allowed = await users.allows(request.headers.get(hdrs.AUTHORIZATION))
        except HashingBusy:
            limits = request.app.get(LIMITS_KEY)
            if limits is not None:
                limits.rejected[Rejection.AUTH_BUSY] += 1
            raise web.HTTPServiceUnavailable(
                headers={hdrs.RETRY_AFTER: "1"}, text="Too many password checks waiting\n"
            ) from None
        if not allowed:
            raise web.HTTPUnauthorized(
                headers={hdrs.WWW_AUTHENTICATE: BASIC_CHALLENGE}, text="Unauthorized\n"
            )
    return await handler(request)


async def configured_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``nosniff`` and ``http_server_config.headers`` on every response, errors included."""
    response.headers[hdrs.X_CONTENT_TYPE_OPTIONS] = "nosniff"
    response.headers.update(_exporter(request).web_config.http_server_config.headers.items())


async def runbook(request: web.Request) -> web.Response:
    """The alerts' runbook (:mod:`mail_exporter.runbook`), where their links point."""
    return web.Response(text=runbook_page(), content_type="text/html")


async def _stop_renderer(app: web.Application) -> None:
    app[RENDERER_KEY].shutdown(wait=False, cancel_futures=True)


def make_app(exporter: Exporter, limits: WebLimits | None = None) -> web.Application:
    """The app; with ``limits``, its connections are tracked and /probe runs are capped."""
    tracking = [limits.track_requests] if limits is not None else []
    app = web.Application(middlewares=[*tracking, authenticate])
    app[EXPORTER_KEY] = exporter
    app[RENDERER_KEY] = ThreadPoolExecutor(1, thread_name_prefix="metrics")
    app.on_cleanup.append(_stop_renderer)
    if limits is not None:
        app[LIMITS_KEY] = limits
    app.on_response_prepare.append(configured_headers)
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", limits.limit_probes(probe) if limits is not None else probe)
    app.router.add_get("/config", shown_config)
    app.router.add_get(EXAMPLE_CONFIG_PATH, example_config)
    app.router.add_get("/runbook", runbook)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    return app
