"""HTTP endpoints: /, /metrics, /probe, /-/healthy, /-/ready and /-/reload (aiohttp).

/metrics renders in a worker thread so that collectors doing file or process
work never block the event loop, and it never waits on a network probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from mail_exporter.config import ConfigError
from mail_exporter.durations import format_duration
from mail_exporter.exporter import Exporter
from mail_exporter.metrics import ProbeFamilies
from mail_exporter.probes import ProbeResult, run_probe
from mail_exporter.report import render_report
from mail_exporter.status_page import render_status_page
from mail_exporter.targets import parse_address

logger = logging.getLogger(__name__)

EXPORTER_KEY = web.AppKey("exporter", Exporter)
PROBE_PARAMETERS = frozenset({"target", "module", "debug"})
MINIMUM_BUDGET_SECONDS = 0.1


class _OneProbe:
    """A registry's only collector: the families of a single /probe result."""

    def __init__(self, result: ProbeResult) -> None:
        self.result = result

    def collect(self) -> Iterable[Metric]:
        families = ProbeFamilies(["protocol"])
        failures = {self.result.failure.reason.value: 1.0} if self.result.failure else {}
        last_success = time.time() if self.result.success else None
        families.add([self.result.protocol], self.result, failures, last_success)
        return families


def _exporter(request: web.Request) -> Exporter:
    return request.app[EXPORTER_KEY]


async def metrics(request: web.Request) -> web.Response:
    """Self-metrics and collectors from the registry, rendered in a worker thread (collectors
    may read files or run programs), then the probe results, already rendered per target."""
    exporter = _exporter(request)
    body = await asyncio.to_thread(generate_latest, exporter.registry)
    body += exporter.scheduler.render().encode()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _probe_budget(request: web.Request, module_timeout: float, offset: float) -> float:
    header = request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
    try:
        scrape_timeout = float(header) if header else None
    except ValueError:
        raise web.HTTPBadRequest(
            text=f"invalid X-Prometheus-Scrape-Timeout-Seconds {header!r}\n"
        ) from None
    if scrape_timeout is None:
        return module_timeout
    budget = scrape_timeout - offset if scrape_timeout > offset else scrape_timeout
    return max(MINIMUM_BUDGET_SECONDS, min(module_timeout, budget))


async def probe(request: web.Request) -> web.Response:
    config = _exporter(request).config
    unknown = sorted(set(request.query) - PROBE_PARAMETERS)
    if unknown:
        raise web.HTTPBadRequest(
            text=f"unknown parameter {unknown[0]!r}: /probe takes target, module and debug only "
            "(credentials and TLS settings come from the config file)\n"
        )
    module_name = request.query.get("module")
    if not module_name:
        raise web.HTTPBadRequest(text="module parameter is missing\n")
    module = config.modules.get(module_name)
    if module is None:
        known = ", ".join(sorted(config.modules)) or "none"
        raise web.HTTPBadRequest(text=f"unknown module {module_name!r} (configured: {known})\n")
    target = request.query.get("target", "")
    try:
        address = parse_address(target)
    except ValueError as error:
        raise web.HTTPBadRequest(text=f"target parameter: {error}\n") from None
    budget = _probe_budget(request, module.timeout_seconds, config.global_.scrape_timeout_offset)
    result = await run_probe(address, module, budget)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OneProbe(result))
    exposition = generate_latest(registry).decode()
    if request.query.get("debug", "").lower() == "true":
        text = render_report(str(address), module_name, result)
        text += f"\nTime budget: {format_duration(budget)}\n\nMetrics:\n{exposition}"
        return web.Response(text=text)
    return web.Response(
        text=exposition,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    if not _exporter(request).ready:
        raise web.HTTPServiceUnavailable(text="Not ready\n")
    return web.Response(text="Ready\n")


async def reload(request: web.Request) -> web.Response:
    try:
        _exporter(request).reload()
    except ConfigError as error:
        raise web.HTTPInternalServerError(
            text=f"reload failed, running config kept:\n{error}\n"
        ) from None
    return web.Response(text="Reloaded\n")


async def landing(request: web.Request) -> web.Response:
    return web.Response(text=render_status_page(_exporter(request)), content_type="text/html")


def make_app(exporter: Exporter) -> web.Application:
    app = web.Application()
    app[EXPORTER_KEY] = exporter
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    return app
