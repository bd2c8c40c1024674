"""The landing page: every target, route and queue at a glance, without Grafana or JavaScript.

Plain HTML that reloads itself every 30 seconds. The mailboxes table shows what the IMAP
probes read of their configured mailboxes; quota use from 90 % and a newest message older
than its ``newest_max_age`` are marked, as the alerts MailboxQuotaNearlyFull and
MailArchiveStale/MailSharedMailboxStale see them. It reads the scheduler's latest
results and what the queue collectors measure when it is opened (a collection shared
with any scrape in flight, as a scrape's): it never starts a probe itself, and shows the
queues whether or not Prometheus has scraped yet.

It says what is wrong in the words of whatever failed, so that the fix it suggests is the
right one: each target's last probe and since when it is down, each round trip's failing
stage with its detail (``receive: connect: Connection refused``, not ``receive`` alone),
each enabled collector's health and last error (the queue collectors' from the collection
the page asks for, the others' from the last scrape), and, where the queues cannot be
shown, which collector failed and why. A config that watches nothing (a fresh install,
or discovery finding no mail server) gets the next steps instead of empty tables, with a
link to the example config the exporter serves (``/config/example``).

Servers choose their replies and collectors quote files and commands: every such text is
made printable and bounded (:func:`~mail_exporter.printable.printable`, ``DETAIL_LIMIT``)
before it is escaped as HTML, so no reply can add markup or stretch the page.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from urllib.parse import urlencode

from prometheus_client.core import Metric

from mail_exporter import __version__
from mail_exporter.collectors.base import CollectorHealth
from mail_exporter.discovery import NOTHING_FOUND
from mail_exporter.exporter import Exporter
from mail_exporter.printable import printable
from mail_exporter.probes.findings import findings
from mail_exporter.probes.result import ProbeResult
from mail_exporter.report import quota_percent
from mail_exporter.roundtrip.outcome import RouteStats
from mail_exporter.scheduler import TargetState
from mail_exporter.tls_facts import tls_version_label

REFRESH_SECONDS = 30
DETAIL_LIMIT = 300
"""Most characters of an error shown (the log has them all): a reply may be long."""
EXAMPLE_CONFIG_PATH = "/config/example"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
th,td{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}
th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#07651b;font-weight:bold}.down{color:#b00020;font-weight:bold}.pending{color:#777}
.warn{color:#a15c00;font-weight:bold}
td.link,td.when{white-space:nowrap}
.badge{display:inline-block;margin:0 .3em .2em 0;padding:0 .4em;border:1px solid currentColor;
border-radius:.3em;font-size:90%}
"""


def _detail(text: str) -> str:
    """Text from outside (a server's reply, a collector's error) as it may be shown."""
    return printable(text, DETAIL_LIMIT)


def _cell(text: str, css: str = "") -> str:
    return f'<td class="{css}">{html.escape(text)}</td>' if css else f"<td>{html.escape(text)}</td>"


def _table(headings: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f"<p>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    return f"<table><tr>{head}</tr>\n" + "\n".join(rows) + "</table>"


def _posture_cell(result: ProbeResult, now: float) -> str:
    """The server's security findings as badges, critical (red) before warnings (amber)."""
    badges = "".join(
        f'<span class="badge {"down" if finding.severity == "critical" else "warn"}">'
        f"{html.escape(finding.text)}</span>"
        for finding in findings(result, now)
    )
    return f"<td>{badges}</td>"


def _target_row(state: TargetState, now: float) -> str:
    result = state.result
    link = "/probe?" + urlencode(
        {"target": state.target.address, "module": state.target.module, "debug": "true"}
    )
    cells = [_cell(state.target.name), _cell(state.target.address), _cell(state.target.module)]
    if result is None:
        cells += [_cell("pending", "pending"), *(_cell("") for _ in range(7))]
    else:
        facts = result.tls
        days = (
            f"{(facts.earliest_not_after - now) / 86400:.1f}"
            if facts and facts.earliest_not_after is not None
            else ""
        )
        days_css = "warn" if days and float(days) < 20 else "num"
        error = f"{result.failure.phase.value}: {result.failure.detail}" if result.failure else ""
        cells += [
            _cell("up", "up") if result.success else _cell("down", "down"),
            _cell(_ago(state.probed_at, now)),
            _cell(_moment(state.down_since, now), "down when" if state.down_since else ""),
            _cell(f"{result.duration_seconds * 1000:.0f} ms", "num"),
            _cell(days, days_css),
            _cell(tls_version_label(facts.version) if facts else ""),
            _posture_cell(result, now),
            _cell(_detail(error)),
        ]
    cells.append(f'<td class="link"><a href="{html.escape(link)}">probe now</a></td>')
    return "<tr>" + "".join(cells) + "</tr>"


def _mailbox_rows(states: Iterable[TargetState], now: float) -> list[str]:
    """The configured mailboxes each target's last probe read (``imap.mailboxes``)."""
    rows = []
    for state in states:
        for box in state.result.mailboxes if state.result else ():
            storage = quota_percent(box, "storage_bytes")
            messages = quota_percent(box, "messages")
            fullest = max((p for p in (storage, messages) if p is not None), default=None)
            age = now - box.newest if box.newest is not None else None
            stale = age is not None and box.newest_max_age is not None and age > box.newest_max_age
            rows.append(
                "<tr>" + _cell(state.target.name) + _cell(box.name) + _cell(box.kind or "")
                + _cell("" if box.messages is None else str(box.messages), "num")
                + _cell("" if fullest is None else f"{fullest:.0f} %",
                        "num warn" if fullest is not None and fullest >= 90 else "num")
                + _cell("" if age is None else _duration(age), "num warn" if stale else "num")
                + "</tr>"
            )  # fmt: skip
    return rows


def _duration(seconds: float) -> str:
    """A rough age: seconds, minutes, hours or days."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def _ago(moment: float | None, now: float) -> str:
    return "" if moment is None else f"{_duration(now - moment)} ago"


def _moment(moment: float | None, now: float) -> str:
    """A time of day in UTC and how long ago it was; the date too when not within a day."""
    if moment is None:
        return ""
    shape = "%H:%M:%S UTC" if now - moment < 86400 else "%Y-%m-%d %H:%M UTC"
    return f"{time.strftime(shape, time.gmtime(moment))} ({_ago(moment, now)})"


def _route_failure(stats: RouteStats) -> str:
    """The last attempt's failure, stage and detail (``receive: connect: …``)."""
    if stats.last_failure is not None:
        detail = stats.last_failure_detail
        return f"{stats.last_failure}: {detail}" if detail else stats.last_failure
    if stats.success is False:  # no stage failed: the message went to the junk mailbox
        return "junk: delivered to the junk mailbox"
    return ""


def _route_rows(exporter: Exporter, now: float) -> list[str]:
    rows = []
    for name, runner in exporter.roundtrip.routes.items():
        stats, route = runner.stats, runner.route
        if stats.success is None:
            status = _cell("pending", "pending")
        else:
            status = _cell("up", "up") if stats.success else _cell("down", "down")
        duration = f"{stats.duration * 1000:.0f} ms" if stats.duration is not None else ""
        since = _ago(stats.last_success, now) or "never"
        down = _cell(_moment(stats.down_since, now), "down when" if stats.down_since else "")
        rows.append(
            "<tr>" + _cell(name) + _cell(f"{route.send.place} → {route.receive.place}")
            + status + _cell(_ago(stats.last_attempt, now)) + down + _cell(duration, "num")
            + _cell(since) + _cell(_detail(_route_failure(stats))) + "</tr>"
        )  # fmt: skip
    return rows


def _collector_rows(health: dict[str, CollectorHealth], now: float) -> list[str]:
    rows = []
    for name, state in health.items():
        if state.success is None:
            status = _cell("not collected yet", "pending")
        else:
            status = _cell("ok", "up") if state.success else _cell("failing", "down")
        error = _detail(state.error)
        if error and state.success:  # an earlier failure, over now
            error += f" ({_ago(state.error_time, now)})"
        rows.append(
            "<tr>" + _cell(name) + status + _cell(_ago(state.checked, now))
            + _cell(_moment(state.failing_since, now), "down when" if state.failing_since else "")
            + _cell(error) + "</tr>"
        )  # fmt: skip
    return rows


QUEUE_COLLECTORS = ("postfix_queue", "exim_queue", "qmail_queue")
"""The collectors whose families the page shows; ask them with
:meth:`~mail_exporter.collectors.base.CollectorSet.families_of` (it may wait for them)."""


def _queue_rows(queues: Iterable[Metric]) -> list[str]:
    """A row per queue read, and one per instance that could not be read while others
    were (the collector worked, so its health does not show it)."""
    rows = []
    for family in queues:
        if family.name == "mail_queue_collect_success":
            rows += [
                "<tr>" + _cell(sample.labels.get("mta", ""))
                + _cell(sample.labels.get("mta_instance", "")) + _cell("")
                + _cell("unreadable (the log says why)", "down") + "</tr>"
                for sample in family.samples if sample.value == 0
            ]  # fmt: skip
        if family.name != "mail_queue_messages":
            continue
        for sample in family.samples:
            labels = sample.labels
            css = "num warn" if sample.value > 0 and labels.get("queue") == "deferred" else "num"
            rows.append(
                "<tr>" + _cell(labels.get("mta", "")) + _cell(labels.get("mta_instance", ""))
                + _cell(labels.get("queue", "")) + _cell(f"{sample.value:.0f}", css) + "</tr>"
            )  # fmt: skip
    return rows


def _no_queues(health: dict[str, CollectorHealth]) -> str:
    """Why there is no queue to show, in the failing collectors' own words."""
    enabled = [name for name in QUEUE_COLLECTORS if name in health]
    if not enabled:
        return "No queue collector is enabled (postfix_queue, exim_queue or qmail_queue)."
    failing = [f"{name}: {_detail(health[name].error)}" for name in enabled
               if health[name].success is False]  # fmt: skip
    if failing:
        return "The queues could not be read. " + "; ".join(failing)
    return f"{', '.join(enabled)} reported no queue (no instance configured?)."


def _next_steps(exporter: Exporter) -> str:
    """What to do on an exporter that watches no server yet (fresh install, nothing found),
    or how to take over the config discovery wrote."""
    config, discovered = exporter.config, exporter.discovered
    if discovered is not None and discovered.found_anything:
        return (
            "<p>Running on what discovery found on this host. To keep that config and "
            "change it (logins, other servers): <code>mail-exporter discover &gt; "
            "mail_exporter.yml</code>, then <code>--config.file mail_exporter.yml</code>.</p>\n"
        )
    if config.targets or config.roundtrip:
        return ""
    example = f'the <a href="{EXAMPLE_CONFIG_PATH}">example config</a>'
    if discovered is not None:
        found = (
            f"<p>{html.escape(NOTHING_FOUND)} Discovery looks again at each reload "
            "(SIGHUP): start the exporter on the mail server itself, or as a user that may "
            "read its configs.</p>"
        )
    else:
        found = "<p>The config file probes no server: it has no targets and no round trips.</p>"
    return f"""<h2>Next steps</h2>
{found}
<p>To watch servers elsewhere, write a config: start from {example} (every key, with
comments) or from <code>mail-exporter discover &gt; mail_exporter.yml</code>, check it with
<code>mail-exporter check-config mail_exporter.yml</code>, then run
<code>mail-exporter --config.file mail_exporter.yml</code> (or reload: SIGHUP).
To try one server first: <code>mail-exporter probe --protocol smtp --tls starttls
HOST:25</code>.</p>
"""


def render_status_page(exporter: Exporter, queues: Iterable[Metric]) -> str:
    """The page, with the queue families the queue collectors gave just now."""
    now = time.time()
    source = exporter.source
    reload_state = "loaded" if exporter.reload_successful else "last reload FAILED"
    targets = [_target_row(state, now) for state in exporter.scheduler.states.values()]
    health = exporter.collectors.health()
    modules = ", ".join(sorted(exporter.config.modules)) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>mail_exporter</title><style>{_STYLE}</style></head>
<body><h1>mail_exporter {html.escape(__version__)}</h1>
<p><a href="/metrics">Metrics</a> · <a href="/-/healthy">Health</a> ·
<a href="/-/ready">Readiness</a> · <a href="/config">config</a>: {html.escape(source)}
({reload_state}) ·
refreshes every {REFRESH_SECONDS}s</p>
{_next_steps(exporter)}<h2>Targets</h2>
{_table(["target", "address", "module", "status", "last probe", "down since", "latency",
         "certificate days left", "TLS", "security findings", "last error", ""],
        targets, "No targets configured.")}
<h2>Mailboxes</h2>
{_table(["target", "mailbox", "kind", "messages", "quota used", "newest message age"],
        _mailbox_rows(exporter.scheduler.states.values(), now),
        "No mailboxes read (imap.mailboxes on an imap module), or none answered yet.")}
<h2>Round trips</h2>
{_table(["route", "send → receive", "status", "last attempt", "down since", "last transit",
         "last success", "last failure"],
        _route_rows(exporter, now), "No round-trip routes configured.")}
<h2>Queues</h2>
{_table(["MTA", "instance", "queue", "messages"], _queue_rows(queues), _no_queues(health))}
<h2>Collectors</h2>
<p>The queue collectors run when this page opens, the others at each scrape of /metrics.</p>
{_table(["collector", "status", "last collection", "failing since", "last error"],
        _collector_rows(health, now), "No collector enabled.")}
<h2>Modules</h2><p>{html.escape(modules)}</p>
<p>Probe any server: <code>/probe?target=HOST:PORT&amp;module=NAME</code>
(add <code>&amp;debug=true</code> for the session log).</p>
</body></html>
"""
