"""The HTTP endpoints, driven through aiohttp's test client with real probes behind them."""

from __future__ import annotations

import asyncio
import platform
import textwrap
import threading
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from mail_exporter import __version__
from mail_exporter.collectors import base
from mail_exporter.collectors.base import register_collector
from mail_exporter.config import fields as config_fields
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.config.files import read_bounded
from mail_exporter.config.root import Config
from mail_exporter.exporter import Exporter
from mail_exporter.web import accepts_gzip, make_app
from tests.promtool import check_metrics
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.scripted import scripted_server, silent
from tests.test_collectors import StatefulCollector, stateful_collectors

PASSWORD = "web-test-secret-42"


def sample(text: str, name: str, labels: dict[str, str] | None = None, **more: str) -> float:
    """The value of the one sample ``name`` with exactly these labels in an exposition."""
    wanted = {**(labels or {}), **more}
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == wanted:
                return float(found.value)
    raise AssertionError(f"no sample {name}{wanted}")


def write_config(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
async def hanging_address() -> AsyncIterator[str]:
    async with scripted_server(silent) as address:
        yield address


@pytest.fixture
async def client_for(tmp_path: Path) -> AsyncIterator[object]:
    clients: list[TestClient[object, object]] = []
    exporters: list[Exporter] = []

    async def build(body: str) -> tuple[TestClient[object, object], Exporter]:
        exporter = Exporter(write_config(tmp_path / "config.yml", body), {})
        client: TestClient[object, object] = TestClient(TestServer(make_app(exporter)))
        await client.start_server()
        exporter.start()
        clients.append(client)
        exporters.append(exporter)
        return client, exporter

    yield build
    for exporter in exporters:
        exporter.stop()
    for client in clients:
        await client.close()


def config_for(pki: PKI, postfix: Postfix, dovecot: Dovecot, extra_targets: str = "") -> str:
    return f"""\
        global: {{interval: 1s}}
        modules:
          smtp_starttls:
            protocol: smtp
            tls: starttls
            timeout: 2s
            tls_config: {{ca_file: {pki.ca_file}}}
          imaps:
            protocol: imap
            tls: implicit
            tls_config: {{ca_file: {pki.ca_file}}}
            auth: {{username: {dovecot.user}, password_env: WEB_TEST_PASSWORD}}
        targets:
          - {{name: mx, address: "localhost:{postfix.smtp_port}", module: smtp_starttls}}
          - {{name: store, address: "127.0.0.1:{dovecot.imaps_port}", module: imaps}}
        {extra_targets}"""


async def wait_for_results(exporter: Exporter, count: int) -> None:
    for _ in range(100):
        if sum(state.result is not None for state in exporter.scheduler.states.values()) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("scheduled probes produced no results")


async def test_metrics_from_scheduled_probes_pass_promtool(
    client_for,
    pki: PKI,
    postfix: Postfix,
    dovecot: Dovecot,
    hanging_address: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEB_TEST_PASSWORD", dovecot.password)
    hang = f'  - {{name: hang, address: "{hanging_address}", module: smtp_starttls}}'
    client, exporter = await client_for(config_for(pki, postfix, dovecot, hang))
    await wait_for_results(exporter, 3)
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    mx = {"target": "mx", "module": "smtp_starttls", "protocol": "smtp"}
    assert sample(text, "mail_probe_success", mx) == 1.0
    assert (
        sample(text, "mail_probe_success", target="store", module="imaps", protocol="imap") == 1.0
    )
    assert (
        sample(
            text,
            "mail_probe_failures_total",
            target="hang",
            module="smtp_starttls",
            protocol="smtp",
            reason="timeout",
        )
        >= 1.0
    )
    assert sample(text, "mail_probe_failures_total", mx, reason="timeout") == 0.0
    assert sample(text, "mail_probe_phase_duration_seconds", mx, phase="tls_handshake") > 0
    assert (
        sample(text, "mail_tls_cert_expiry_timestamp_seconds", mx)
        == pki.server_not_after.timestamp()
    )
    assert (
        sample(text, "mail_tls_cert_not_before_timestamp_seconds", mx)
        == pki.server_not_before.timestamp()
    )
    assert sample(text, "mail_tls_cert_verified", mx) == 1.0
    assert sample(text, "mail_tls_version_info", mx, version="TLS 1.3") == 1.0
    assert sample(text, "mail_probe_starttls_offered", mx) == 1.0
    assert sample(text, "mail_probe_latency_seconds_count", mx) >= 1.0
    assert sample(text, "mail_probe_last_success_timestamp_seconds", mx) > 0
    assert (
        sample(
            text,
            "mail_exporter_build_info",
            version=__version__,
            python_version=platform.python_version(),
        )
        == 1.0
    )
    assert dovecot.password not in text
    await check_metrics(text)


async def test_metrics_answer_while_probes_hang(client_for, hanging_address: str) -> None:
    body = """\
        global: {interval: 1s, concurrency: 4}
        modules:
          slow: {protocol: smtp, timeout: 30s}
        targets:
""" + "".join(
        f'          - {{name: t{i}, address: "{hanging_address}", module: slow}}\n'
        for i in range(20)
    )
    client, exporter = await client_for(body)
    await asyncio.sleep(1.5)  # every slot now holds a hanging probe
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.get("/metrics")
    elapsed = loop.time() - started
    assert response.status == 200
    assert "mail_probe_success" not in await response.text()  # nothing finished yet
    assert elapsed < 5.0  # answered without waiting for the 30 s probes


def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample's name and labels in an exposition, without the values."""
    return {
        (found.name, tuple(sorted(found.labels.items())))
        for family in text_string_to_metric_families(text)
        for found in family.samples
    }


def quick_failing_target(hanging_address: str) -> str:
    """One target, probed every second, that fails within 100 ms: a result soon."""
    return f"""\
        global: {{interval: 1s}}
        modules:
          quick: {{protocol: smtp, timeout: 100ms}}
        targets:
          - {{name: gone, address: "{hanging_address}", module: quick}}
"""


async def test_metrics_gzipped_when_the_client_accepts_it(client_for, hanging_address: str) -> None:
    client, exporter = await client_for(quick_failing_target(hanging_address))
    await wait_for_results(exporter, 1)
    plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Accept-Encoding"
    text = await plain.text()
    # As Prometheus asks for it; read the bytes as they were sent.
    packed = await client.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding"
    gzipped = await packed.read()
    unpacked = zlib.decompress(gzipped, 16 + zlib.MAX_WBITS).decode()
    assert len(gzipped) < len(unpacked)
    assert series(unpacked) == series(text)
    assert 'mail_probe_success{target="gone",module="quick",protocol="smtp"} 0.0' in unpacked


async def test_a_module_may_drop_the_latency_histogram_and_zero_failure_counters(
    client_for, hanging_address: str
) -> None:
    body = f"""\
        global: {{interval: 1s}}
        modules:
          full: {{protocol: smtp, timeout: 100ms}}
          lean:
            protocol: smtp
            timeout: 100ms
            series: {{latency_histogram: false, zero_failure_counters: false}}
        targets:
          - {{name: full, address: "{hanging_address}", module: full}}
          - {{name: lean, address: "{hanging_address}", module: lean}}
"""
    client, exporter = await client_for(body)
    await wait_for_results(exporter, 2)
    text = await (await client.get("/metrics")).text()
    names = {"full": set(), "lean": set()}
    for name, labels in series(text):
        target = dict(labels).get("target")
        if target in names:
            names[target].add((name, dict(labels).get("reason", "")))
    full, lean = names["full"], names["lean"]
    assert ("mail_probe_latency_seconds_count", "") in full
    assert not {name for name, _ in lean if name.startswith("mail_probe_latency_seconds")}
    full_reasons = {reason for name, reason in full if name == "mail_probe_failures_total"}
    lean_reasons = {reason for name, reason in lean if name == "mail_probe_failures_total"}
    assert lean_reasons == {"timeout"} and len(full_reasons) > 1
    # The rest is the same: only those two families lose series.
    dropped = {"mail_probe_failures_total"}
    assert {name for name, _ in full if not name.startswith("mail_probe_latency_seconds")} - (
        dropped
    ) == {name for name, _ in lean} - dropped


@pytest.mark.parametrize(
    ("accept_encoding", "gzip"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("br;q=1.0, gzip; q=0.1", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("gzip;q=nonsense", False),
    ],
)
def test_accepts_gzip(accept_encoding: str, gzip: bool) -> None:
    assert accepts_gzip(accept_encoding) is gzip


async def test_probe_endpoint(
    client_for, pki: PKI, postfix: Postfix, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_TEST_PASSWORD", dovecot.password)
    client, _ = await client_for(config_for(pki, postfix, dovecot))
    # The module logs in: /probe takes it to its scheduled target only, as scheduled.
    refused = await client.get(
        "/probe", params={"target": f"localhost:{dovecot.imaps_port}", "module": "imaps"}
    )
    assert refused.status == 403
    response = await client.get(
        "/probe", params={"target": f"127.0.0.1:{dovecot.imaps_port}", "module": "imaps"}
    )
    assert response.status == 200
    text = await response.text()
    assert 'mail_probe_success{protocol="imap"} 1.0' in text
    assert "target=" not in text and "module=" not in text
    assert 'mail_probe_phase_duration_seconds{phase="auth",protocol="imap"}' in text
    assert 'mail_tls_cert_verified{protocol="imap"} 1.0' in text


async def test_probe_debug_hides_the_password(
    client_for, pki: PKI, postfix: Postfix, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_TEST_PASSWORD", dovecot.password)
    client, _ = await client_for(config_for(pki, postfix, dovecot))
    response = await client.get(
        "/probe",
        params={"target": f"127.0.0.1:{dovecot.imaps_port}", "module": "imaps", "debug": "true"},
    )
    text = await response.text()
    assert "Verdict: SUCCESS" in text
    assert "LOGIN" in text and "****" in text
    assert dovecot.password not in text
    assert 'mail_probe_success{protocol="imap"} 1.0' in text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"target": "localhost:25"}, "module parameter is missing"),
        (
            {"target": "localhost:25", "module": "nope"},
            "unknown module 'nope': /probe runs the modules of the config file (see /config)",
        ),
        ({"module": "smtp"}, "target parameter: invalid address ''"),
        (
            {"module": "smtp", "target": "localhost"},
            "target parameter: invalid address 'localhost'",
        ),
        ({"module": "smtp", "target": "host:25", "password": "x"}, "unknown parameter 'password'"),
    ],
)
async def test_probe_bad_requests(client_for, params: dict[str, str], message: str) -> None:
    client, _ = await client_for(
        "modules:\n  smtp: {protocol: smtp}\n  hidden_name: {protocol: imap}\n"
    )
    response = await client.get("/probe", params=params)
    assert response.status == 400
    text = await response.text()
    assert message in text
    assert "hidden_name" not in text  # module names are not told to whoever asks


async def test_every_response_forbids_content_sniffing(client_for, hanging_address: str) -> None:
    """A browser must never take a page for HTML or script because of what a server wrote
    into it (/probe?debug=true shows a server's replies)."""
    client, _ = await client_for(
        "modules:\n  smtp: {protocol: smtp, timeout: 1s}\nprobe: {allowed_targets: [127.0.0.1]}\n"
    )
    requests = [
        ("GET", "/probe", {"module": "smtp", "target": hanging_address, "debug": "true"}, 200),
        ("GET", "/probe", {"module": "smtp", "target": hanging_address}, 200),
        ("GET", "/probe", {"module": "nope", "target": hanging_address}, 400),
        ("GET", "/probe", {"module": "smtp", "target": "192.0.2.1:25"}, 403),
        ("GET", "/metrics", {}, 200),
        ("GET", "/", {}, 200),
        ("GET", "/config", {}, 200),
        ("GET", "/-/healthy", {}, 200),
        ("GET", "/-/ready", {}, 200),
        ("GET", "/-/reload", {}, 405),
        ("GET", "/nowhere", {}, 404),
    ]
    for method, path, params, status in requests:
        response = await client.request(method, path, params=params)
        assert response.status == status, (path, params)
        assert response.headers.get("X-Content-Type-Options") == "nosniff", (path, params)


async def test_probe_budget_follows_scrape_timeout(client_for, hanging_address: str) -> None:
    client, _ = await client_for("modules:\n  smtp: {protocol: smtp, timeout: 20s}\n")
    response = await client.get(
        "/probe",
        params={"target": hanging_address, "module": "smtp"},
        headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"},
    )
    text = await response.text()
    assert 'mail_probe_failure_info{phase="banner",protocol="smtp",reason="timeout"} 1.0' in text
    duration = next(
        line for line in text.splitlines() if line.startswith("mail_probe_duration_seconds")
    )
    # The budget is 1.5 s minus the 0.5 s offset: about 1 s, far from the module's 20 s.
    assert 0.9 <= float(duration.split()[-1]) < 10


async def test_health_ready_landing(client_for, hanging_address: str) -> None:
    client, _ = await client_for(
        f"modules:\n  smtp: {{protocol: smtp, timeout: 1s}}\n"
        f'targets:\n  - {{name: hang, address: "{hanging_address}", module: smtp}}\n'
    )
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200
    page = await (await client.get("/")).text()
    assert "/metrics" in page and "hang" in page and "smtp" in page


async def test_reload_keeps_running_config_on_error(client_for, tmp_path: Path) -> None:
    client, exporter = await client_for("modules:\n  a: {protocol: smtp}\n")
    write_config(tmp_path / "config.yml", "modules:\n  b: {protocol: imap}\n")
    response = await client.post("/-/reload")
    assert response.status == 200
    assert set(exporter.config.modules) == {"b"}
    write_config(tmp_path / "config.yml", "modules:\n  c: {protocol: bogus}\n")
    response = await client.post("/-/reload")
    assert response.status == 500
    assert "modules.c.protocol (line 2)" in await response.text()
    assert set(exporter.config.modules) == {"b"}
    metrics = await (await client.get("/metrics")).text()
    assert "mail_exporter_config_last_reload_successful 0.0" in metrics
    assert (await client.get("/-/reload")).status == 405


async def test_reload_reads_files_off_the_event_loop(
    client_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret file that is slow to read (a stalled network filesystem) stalls only the
    reload. (A FIFO is refused at once: see tests/test_cli.py.)"""
    client, exporter = await client_for("modules:\n  a: {protocol: smtp}\n")
    (tmp_path / "probe.pass").write_text("s3cret\n")
    write_config(
        tmp_path / "config.yml",
        "modules:\n  b: {protocol: imap, tls: implicit, auth: {username: u, password_file: probe.pass}}\n",
    )
    release = threading.Event()

    def slow(path: Path, limit: int) -> bytes:
        if path.name == "probe.pass":
            release.wait(30)  # if the reload blocked the loop, this frees it after 30 s
        return read_bounded(path, limit)

    monkeypatch.setattr(config_fields, "read_bounded", slow)
    reload = asyncio.create_task(client.post("/-/reload"))
    await asyncio.sleep(0.2)  # the reload has reached the secret file
    assert (await client.get("/metrics")).status == 200  # served while the reload waits
    assert not reload.done() and set(exporter.config.modules) == {"a"}
    release.set()
    assert (await reload).status == 200
    assert set(exporter.config.modules) == {"b"}


def test_config_type_is_strict() -> None:
    assert Config.model_config.get("extra") == "forbid"


async def test_reload_keeps_unchanged_collectors(
    client_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their caches and positions survive a reload; a changed section rebuilds, a removed one
    closes."""
    monkeypatch.setattr(base, "COLLECTORS", {})
    monkeypatch.setattr(StatefulCollector, "built", 0)
    for name in ("backups", "sensors"):
        register_collector(name, "test", CollectorSection)(
            lambda section, previous: StatefulCollector()
        )
    enabled = "collectors:\n  backups: {enabled: true}\n  sensors: {enabled: true}\n"
    client, exporter = await client_for("modules:\n  a: {protocol: smtp}\n" + enabled)
    before = stateful_collectors(exporter.collectors)
    assert (await client.get("/metrics")).status == 200
    write_config(tmp_path / "config.yml", "modules:\n  b: {protocol: imap}\n" + enabled)
    assert (await client.post("/-/reload")).status == 200
    assert set(exporter.config.modules) == {"b"}
    assert stateful_collectors(exporter.collectors) == before and StatefulCollector.built == 2
    assert (await client.get("/metrics")).status == 200
    assert before["backups"].collections == 2 and not before["backups"].closed

    write_config(tmp_path / "config.yml", "collectors:\n  backups: {enabled: true, timeout: 5s}\n")
    assert (await client.post("/-/reload")).status == 200
    after = stateful_collectors(exporter.collectors)
    assert set(after) == {"backups"} and after["backups"] is not before["backups"]
    assert before["backups"].closed and before["sensors"].closed and not after["backups"].closed


async def test_head_of_metrics_sends_no_body_on_a_kept_alive_connection(
    client_for, hanging_address: str
) -> None:
    """A plain /metrics is streamed; HEAD (which aiohttp routes to GET's handler) must not
    be, or its body would be read as the start of the next response on the connection."""
    client, exporter = await client_for(quick_failing_target(hanging_address))
    await wait_for_results(exporter, 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(
            b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
            b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert second.startswith(b"HTTP/1.1 200"), second[:200]
    finally:
        writer.close()
