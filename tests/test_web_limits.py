"""Web clients cannot blind the exporter: the real ``mail-exporter`` process under a low
open files limit, slow clients beyond that limit, and more /probe requests than it runs at
once (see :mod:`mail_exporter.web_limits`).

The exporter is started with a low ``RLIMIT_NOFILE``, and a scheduled target
on a scripted SMTP server that runs in a thread of its own (the test itself blocks on HTTP
requests and sockets). Slow clients are plain non-blocking sockets that send a request
head one byte at a time and never finish it; the server closing one is seen as an end of
file or a reset, and it is then opened again, so the pressure lasts.

Every test of a served exporter runs on asyncio's event loop and on uvloop's (the
``served_loop`` fixture): the limits accept and open connections themselves so that they
hold on both.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import signal
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mail_exporter.collectors.base import enabled_collectors
from mail_exporter.config.root import default_config, load_config
from mail_exporter.web_limits import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PROBES,
    Condition,
    descriptor_budget,
)
from tests.realservers.pki import PKI
from tests.scripted import Handler, scripted_server, silent, smtp_script
from tests.served import EventLoop, Reply, Served, client_context, get, served_exporter
from tests.test_dashboards import METRICS_DOC, documented_metrics

ROOT = Path(__file__).resolve().parent.parent
SLOW_HEAD = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
STILL_CONNECTING = {errno.ENOTCONN, errno.EAGAIN, errno.EINPROGRESS}
MAX_LOG_LINES = 100


@contextmanager
def threaded_server(handler: Handler) -> Iterator[str]:
    """A scripted server on an event loop in its own thread; yields its ``HOST:PORT``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = scripted_server(handler)
    try:
        yield asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10)
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(_end_connections(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _end_connections() -> None:
    """Cancel the script's connection handlers (the exporter may still hold one open)."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class SlowClients:
    """``count`` connections that each send one more byte of a request head per round."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.sockets = [self._open() for _ in range(count)]
        self.sent = dict.fromkeys(self.sockets, 0)
        self.closed_by_server = 0

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        return sock

    def trickle(self) -> None:
        """A byte more on each; reopen those the server closed."""
        for index, sock in enumerate(self.sockets):
            if self._closed(sock):
                self.closed_by_server += 1
                sock.close()
                del self.sent[sock]
                self.sockets[index] = self._open()
                self.sent[self.sockets[index]] = 0
                continue
            offset = self.sent[sock]
            byte = SLOW_HEAD[offset : offset + 1] or b"a"
            try:
                self.sent[sock] += sock.send(byte)
            except OSError as error:
                if error.errno not in STILL_CONNECTING:
                    self.sent[sock] = len(SLOW_HEAD)  # its next round sees the close

    @staticmethod
    def _closed(sock: socket.socket) -> bool:
        try:
            return sock.recv(1) == b""
        except OSError as error:
            return error.errno not in STILL_CONNECTING

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@contextmanager
def slow_clients(port: int, count: int) -> Iterator[SlowClients]:
    clients = SlowClients(port, count)
    try:
        yield clients
    finally:
        clients.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = get(served.port, "/metrics")
    assert reply.status == 200, reply.body
    return samples(reply.body)


def value(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    wanted = tuple(sorted(labels.items()))
    found = [v for (n, ls), v in metrics.items() if n == name and set(wanted) <= set(ls)]
    assert len(found) <= 1, f"{name}{labels} matches several samples"
    return found[0] if found else None


def write_config(directory: Path, target: str, silent_target: str | None = None) -> Path:
    config = directory / "config.yml"
    lines = [
        "global: {interval: 1s}",
        "modules:",
        "  smtp: {protocol: smtp, timeout: 5s}",
        "  hang: {protocol: smtp, timeout: 3s}",
        "targets:",
        f"  - {{name: mx, address: '{target}', module: smtp}}",
    ]
    if silent_target is not None:
        lines.append("probe: {allowed_targets: ['127.0.0.1']}")
    config.write_text("\n".join(lines) + "\n")
    return config


def probe_results(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> tuple[float | None, float, float | None]:
    """The scheduled target's (success, failures of any reason, probes run)."""
    failures = sum(
        v
        for (n, ls), v in metrics.items()
        if n == "mail_probe_failures_total" and ("target", "mx") in ls
    )
    return (
        value(metrics, "mail_probe_success", target="mx"),
        failures,
        value(metrics, "mail_probe_latency_seconds_count", target="mx"),
    )


def wait_for_a_probe(served: Served) -> None:
    for _ in range(100):
        if probe_results(scrape(served))[2]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the scheduled target was never probed:\n{served.stderr()}")


def test_slow_clients_beyond_the_open_files_limit_blind_neither_metrics_nor_probes(
    tmp_path: Path, served_loop: EventLoop
) -> None:
    """More slow clients than the process may open files: /metrics answers throughout, the
    scheduled probe keeps passing, the log stays a few lines; then a lone slow client is
    closed by the read timeout."""
    ehlo = ["250-mx.test", "250 PIPELINING"]
    with (
        threaded_server(smtp_script(["220 mx.test ESMTP"], ehlo)) as target,
        served_exporter(
            tmp_path, write_config(tmp_path, target), open_files=(128, 256), loop=served_loop
        ) as served,
    ):
        limits = (Path("/proc") / str(served.process.pid) / "limits").read_text()
        assert any(
            line.split()[3:5] == ["256", "256"]
            for line in limits.splitlines()
            if line.startswith("Max open files")
        ), limits
        wait_for_a_probe(served)
        before = probe_results(scrape(served))
        assert before[0] == 1.0 and before[1] == 0, served.stderr()

        answered = 0
        with slow_clients(served.port, 300) as clients:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                for _ in range(4):
                    clients.trickle()
                    time.sleep(0.1)
                assert get(served.port, "/metrics").status == 200
                answered += 1
            during = scrape(served)
        assert answered >= 3
        assert clients.closed_by_server > 0, "the slow clients were all kept open"
        success, failures, probes = probe_results(during)
        assert success == 1.0 and failures == 0, served.stderr()
        assert probes is not None and before[2] is not None and probes > before[2]
        assert (value(during, "mail_exporter_web_rejected_total", reason="evicted") or 0) > 0
        cap = value(during, "mail_exporter_web_connections_max")
        assert cap is not None and cap < 256
        assert (value(during, "mail_exporter_web_connections") or 0) <= cap

        # A lone slow client, well under the cap, is closed by the read timeout (10s).
        timeouts = value(scrape(served), "mail_exporter_web_rejected_total", reason="read_timeout")
        with slow_clients(served.port, 1) as lone:
            opened = time.monotonic()
            while lone.closed_by_server == 0 and time.monotonic() - opened < 40:
                lone.trickle()
                time.sleep(0.5)
            assert lone.closed_by_server == 1, "the slow client was never closed"
            assert time.monotonic() - opened > 5  # by the timeout, not by being evicted
        after = value(scrape(served), "mail_exporter_web_rejected_total", reason="read_timeout")
        assert after is not None and after > (timeouts or 0)

        log = served.stderr()
        assert len(log.splitlines()) < MAX_LOG_LINES, log[-3000:]
        assert "open files limit raised from 128 to 256" in log
        assert log.count("web connections at their cap") == 1, log


def test_probe_requests_past_the_cap_get_503_with_retry_after_and_are_counted(
    tmp_path: Path, served_loop: EventLoop
) -> None:
    ehlo = ["250 mx.test"]
    with (
        threaded_server(smtp_script(["220 mx.test ESMTP"], ehlo)) as target,
        threaded_server(silent) as hanging,
        served_exporter(
            tmp_path,
            write_config(tmp_path, target, hanging),
            "--probe.max-concurrency",
            "2",
            loop=served_loop,
        ) as served,
        ThreadPoolExecutor(max_workers=6) as pool,
    ):
        path = f"/probe?module=hang&target={hanging}"
        running = [pool.submit(get, served.port, path) for _ in range(2)]
        for _ in range(100):
            if value(scrape(served), "mail_exporter_probe_requests_in_flight") == 2:
                break
            time.sleep(0.05)
        refused: list[Reply] = [
            reply for reply in pool.map(lambda _: get(served.port, path), range(4))
        ]
        assert [reply.status for reply in refused] == [503] * 4
        assert all(int(reply.headers["Retry-After"]) > 0 for reply in refused)
        assert "--probe.max-concurrency" in refused[0].body
        assert [future.result().status for future in running] == [200, 200]

        metrics = scrape(served)
        assert value(metrics, "mail_exporter_web_rejected_total", reason="probe_limit") == 4
        assert value(metrics, "mail_exporter_probe_requests_in_flight") == 0
        assert value(metrics, "mail_exporter_probe_requests_concurrent_max") == 2
        # Every family of the limits is documented.
        names = {
            name
            for name, _ in metrics
            if name.startswith(("mail_exporter_web", "mail_exporter_probe_requests"))
        }
        documented = set(documented_metrics(METRICS_DOC.read_text(encoding="utf-8")))
        assert names and names <= documented, names - documented
        # The probes keep going past the cap: a slot freed is a slot taken.
        assert get(served.port, path).status == 200
        log = served.stderr()
        assert log.count("/probe at its cap of 2") == 1, log


def test_accept_failures_for_lack_of_descriptors_are_one_log_line(
    tmp_path: Path, served_loop: EventLoop
) -> None:
    """Descriptors the budget did not foresee (held here by ones the exporter inherits):
    accepting fails, and that is logged once, not once a try, while /metrics answers."""
    ehlo = ["250 mx.test"]
    inherited = [os.open(os.devnull, os.O_RDONLY) for _ in range(150)]
    try:
        with (
            threaded_server(smtp_script(["220 mx.test ESMTP"], ehlo)) as target,
            served_exporter(
                tmp_path,
                write_config(tmp_path, target),
                open_files=(256, 256),
                pass_fds=inherited,
                loop=served_loop,
            ) as served,
        ):
            with slow_clients(served.port, 300) as clients:
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    for _ in range(4):
                        clients.trickle()
                        time.sleep(0.1)
                    assert get(served.port, "/metrics").status == 200
            log = served.stderr()
            assert len(log.splitlines()) < MAX_LOG_LINES, log[-3000:]
            assert log.count("accepting web connections fails") == 1, log
    finally:
        for descriptor in inherited:
            os.close(descriptor)


def test_the_budget_keeps_descriptors_for_probes_and_collectors() -> None:
    """The formula of the module docstring, on the built-in config."""
    config = default_config()
    targets = 2 * len(config.targets)  # fewer than global.concurrency: 2 for each
    budget = descriptor_budget(config, [], 1024, 1, 512, None)
    assert budget.reserved == 32 + 64 + targets
    assert budget.probes == min(128, (1024 - budget.reserved) // 8)
    assert budget.connections == min(512, 1024 - budget.reserved - 2 * budget.probes)
    small = descriptor_budget(config, ["host", "logs"], 256, 2, 512, None)
    sources = len(config.collectors.logs.sources)
    assert small.reserved == 32 + 2 * 64 + targets + 2 * 4 + 4 * sources
    tiny = descriptor_budget(config, [], 64, 1, 512, 20)
    assert tiny.connections == 8 and tiny.short > 0


def test_the_systemd_unit_leaves_the_default_limits_whole() -> None:
    """LimitNOFILE= in the unit covers the example config (every collector on) on both
    addresses of ``:9469`` without lowering the default caps."""
    unit = (ROOT / "deploy" / "systemd" / "mail-exporter.service").read_text()
    found = re.findall(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert len(found) == 1, "the unit sets LimitNOFILE= once, as soft and hard limit"
    config = load_config(ROOT / "examples" / "mail_exporter.yml")
    enabled = enabled_collectors(config.collectors, {})
    budget = descriptor_budget(config, enabled, int(found[0]), 2, DEFAULT_MAX_CONNECTIONS, None)
    assert budget.connections == DEFAULT_MAX_CONNECTIONS and budget.probes == DEFAULT_MAX_PROBES
    assert budget.short == 0


def test_over_tls_failed_reset_and_silent_handshakes_end_and_free_their_slots(
    tmp_path: Path, pki: PKI, served_loop: EventLoop
) -> None:
    """With TLS the connection is counted from the accept, before its handshake: a failed
    handshake, one the client resets, and one that never starts (closed by the read
    timeout) each give their slot back."""
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {pki.server_key}}}\n"
    )
    context = client_context(pki)
    flags = (
        "--web.config.file",
        str(web),
        "--web.read-timeout",
        "2s",
        "--web.max-connections",
        "8",
    )
    with (
        threaded_server(smtp_script(["220 mx.test ESMTP"], ["250 mx.test"])) as target,
        served_exporter(
            tmp_path, write_config(tmp_path, target), *flags, context=context, loop=served_loop
        ) as served,
    ):
        for _ in range(20):  # plain HTTP to the TLS port: the handshake fails
            with socket.create_connection(("127.0.0.1", served.port), timeout=10) as failed:
                failed.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                failed.recv(100)
            with socket.create_connection(("127.0.0.1", served.port), timeout=10) as reset:
                reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                reset.sendall(SLOW_HEAD[:1])  # a byte of a ClientHello, then a reset
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as silent_client:
            opened = time.monotonic()
            assert silent_client.recv(100) == b""  # closed by the exporter
            assert time.monotonic() - opened > 1
        for _ in range(100):
            reply = get(served.port, "/metrics", context)
            metrics = samples(reply.body)
            if value(metrics, "mail_exporter_web_connections") == 1:  # this scrape's own
                break
            time.sleep(0.1)
        assert value(metrics, "mail_exporter_web_connections") == 1, reply.body
        assert value(metrics, "mail_exporter_web_connections_max") == 8
        assert value(metrics, "mail_exporter_web_rejected_total", reason="read_timeout") == 1
        assert len(served.stderr().splitlines()) < MAX_LOG_LINES


def test_tls_clients_whose_hello_waits_before_the_accept_are_answered(
    tmp_path: Path, pki: PKI, served_loop: EventLoop
) -> None:
    """The exporter stopped (SIGSTOP) while TLS clients connect and send their ClientHello,
    then continued: each connection is accepted with its ClientHello already waiting, as
    under a burst of clients, and each handshake completes and gets its answer."""
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {pki.server_key}}}\n"
    )
    context = client_context(pki)
    config = tmp_path / "config.yml"
    config.write_text("modules: {smtp: {protocol: smtp}}\n")
    flags = ("--web.config.file", str(web))
    with served_exporter(tmp_path, config, *flags, context=context, loop=served_loop) as served:
        clients: list[ssl.SSLSocket] = []
        served.process.send_signal(signal.SIGSTOP)
        try:
            for _ in range(5):
                sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
                client = context.wrap_socket(
                    sock, server_hostname="127.0.0.1", do_handshake_on_connect=False
                )
                clients.append(client)
                client.setblocking(False)
                with pytest.raises(ssl.SSLWantReadError):
                    client.do_handshake()  # the ClientHello is sent; the answer waits
                client.settimeout(10)
        finally:
            served.process.send_signal(signal.SIGCONT)
        for client in clients:
            with client:
                client.do_handshake()
                client.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert client.recv(100).startswith(b"HTTP/1.1 200 ")


async def test_a_condition_is_logged_when_it_starts_and_once_it_has_stopped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("mail_exporter.web_limits.CONDITION_QUIET_SECONDS", 1.0)
    condition = Condition()
    started = "at the cap (logged again once it stops)"
    with caplog.at_level(logging.INFO, logger="mail_exporter.web_limits"):
        for _ in range(50):
            condition.occurred("evicted", "at the cap")
        condition.occurred("refused", "at the cap")
        assert [r.getMessage() for r in caplog.records] == [started]
        await asyncio.sleep(0.1)
        condition.occurred("evicted", "at the cap")  # goes on: the end moves a second later
        for _ in range(100):
            if len(caplog.records) > 1:
                break
            await asyncio.sleep(0.1)
        condition.occurred("refused", "at the cap again")  # a new start
    assert [r.getMessage() for r in caplog.records] == [
        started,
        "over after 1s (51 evicted, 1 refused): at the cap",
        "at the cap again (logged again once it stops)",
    ]
