"""The status page, rendered by a real headless Chromium with real probe results behind it."""

from __future__ import annotations

import re
import shutil
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mail_exporter.exporter import Exporter
from mail_exporter.status_page import _STYLE
from mail_exporter.web import make_app
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.realservers.runtime import free_port
from tests.served import served_exporter

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]  # fmt: skip


@pytest.fixture
def exporter_url(tmp_path: Path, pki: PKI, postfix: Postfix, dovecot: Dovecot) -> Iterator[str]:
    ca = f"tls_config: {{ca_file: {pki.ca_file}}}"
    auth = f"auth: {{username: {dovecot.user}, password_env: STATUS_PAGE_PASSWORD}}"
    config = tmp_path / "config.yml"
    config.write_text(
        "global: {interval: 1s}\n"
        "modules:\n"
        f"  smtp: {{protocol: smtp, tls: starttls, {ca}}}\n"
        f"  imaps: {{protocol: imap, tls: implicit, {ca}}}\n"
        f"  submission: {{protocol: smtp, tls: starttls, {ca}, {auth}}}\n"
        f"  mailbox: {{protocol: imap, tls: implicit, {ca}, {auth}}}\n"
        f"  mailboxes: {{protocol: imap, tls: implicit, {ca}, {auth}, imap: {{mailboxes: "
        "[{name: INBOX}, {name: Archive, kind: archive, newest_max_age: 1d}]}}\n"
        "targets:\n"
        f'  - {{name: mx-main, address: "localhost:{postfix.smtp_port}", module: smtp}}\n'
        f'  - {{name: store, address: "127.0.0.1:{dovecot.imaps_port}", module: imaps}}\n'
        f'  - {{name: gone, address: "127.0.0.1:{postfix.refused_port}", module: smtp}}\n'
        f'  - {{name: inbox, address: "127.0.0.1:{dovecot.imaps_port}", module: mailboxes}}\n'
        "collectors:\n"
        "  postfix_queue:\n"
        "    enabled: true\n"
        f"    instances: [{{config_directory: {postfix.config_dir}}}]\n"
        "roundtrip:\n"
        "  - name: loop\n"
        "    interval: 2s\n"
        "    timeout: 10s\n"
        f'    send: {{address: "localhost:{postfix.submission_port}", module: submission,'
        f" from: {dovecot.user}, to: {dovecot.user}}}\n"
        f'    receive: {{address: "localhost:{dovecot.imaps_port}", module: mailbox}}\n'
    )
    env = {"STATUS_PAGE_PASSWORD": dovecot.password}
    with served_exporter(tmp_path, config, env=env) as served:
        url = f"http://127.0.0.1:{served.port}/"
        deadline = time.monotonic() + 20
        while not reported(url):
            assert time.monotonic() < deadline, "the exporter's probes never reported"
            time.sleep(0.3)
        yield url


def reported(url: str) -> bool:
    """Every probe and route has a result (collectors other than the queues' wait for a
    scrape, so their section does not count)."""
    page = fetch(url).split("<h2>Collectors</h2>", 1)[0]
    return "probe now" in page and 'class="pending"' not in page


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def chromium(*arguments: str) -> str:
    binary = shutil.which("chromium")
    assert binary is not None, "chromium is missing: apt-get install chromium"
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def png_colours(path: Path) -> set[bytes]:
    """The RGB colours of an 8-bit RGB or RGBA PNG (what Chromium writes), decoded by hand:
    the test needs no imaging library for one screenshot."""
    data, offset, compressed = path.read_bytes(), 8, b""
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            compressed += body
        offset += 12 + length
    assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
    size = 3 if colour_type == 2 else 4
    stride, raw = width * size, zlib.decompress(compressed)
    above, colours = bytearray(stride), set()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):  # undo the row's filter (PNG spec, section 9)
            left = line[i - size] if i >= size else 0
            corner = above[i - size] if i >= size else 0
            line[i] = (line[i] + _predict(kind, left, above[i], corner)) & 255
        colours.update(bytes(line[i : i + 3]) for i in range(0, stride, size))
        above = line
    return colours


def _predict(kind: int, left: int, up: int, corner: int) -> int:
    if kind == 0:
        return 0
    if kind in (1, 2):
        return left if kind == 1 else up
    if kind == 3:
        return (left + up) // 2
    guess = left + up - corner  # Paeth
    distances = abs(guess - left), abs(guess - up), abs(guess - corner)
    return (left, up, corner)[distances.index(min(distances))]


def style_colour(css_class: str) -> bytes:
    """The text colour the status page's stylesheet gives ``css_class``."""
    match = re.search(rf"\.{css_class}\{{color:#([0-9a-f]{{6}})", _STYLE)
    assert match is not None, css_class
    return bytes.fromhex(match.group(1))


def test_status_page_renders_real_results(exporter_url: str, tmp_path: Path) -> None:
    dom = chromium("--dump-dom", exporter_url)
    assert "<table>" in dom
    for expected in (
        "mx-main",
        "store",
        "gone",
        ">up<",
        ">down<",
        "connect: ",
        "TLS 1.3",
        "probe now",
    ):
        assert expected in dom, expected
    assert 'http-equiv="refresh"' in dom
    route = r"<tr><td>loop</td><td>localhost:\d+ → localhost:\d+</td><td class=\"up\">up</td>"
    assert re.search(route, dom), "no round-trip row for the route, up"
    for queue in ("maildrop", "incoming", "active", "deferred", "hold"):
        row = rf"<tr><td>postfix</td><td>postfix</td><td>{queue}</td><td class=\"num\">\d+</td>"
        assert re.search(row, dom), f"no row for Postfix's {queue} queue"
    screenshot = tmp_path / "status.png"
    chromium(f"--screenshot={screenshot}", "--window-size=1280,800", exporter_url)
    assert png_size(screenshot) == (1280, 800)
    # Drawn with its stylesheet and the results: the green of "up", the red of "down".
    assert {style_colour("up"), style_colour("down")} <= png_colours(screenshot)


def test_status_page_and_metrics_show_the_mailboxes(exporter_url: str) -> None:
    """The scheduled probe's mailboxes: INBOX with its figures; Archive does not exist on
    this server, so it is left out of both, and the probe still passes."""
    row = re.compile(r'<tr><td>inbox</td><td>INBOX</td><td></td><td class="num">\d+</td>')
    deadline = time.monotonic() + 20
    while not row.search(page := fetch(exporter_url)):
        assert time.monotonic() < deadline, page
        time.sleep(0.3)
    assert "<td>Archive</td>" not in page
    metrics = fetch(exporter_url + "metrics")
    labels = 'target="inbox",module="mailboxes",protocol="imap"'
    assert re.search(rf'mail_mailbox_messages\{{{labels},mailbox="INBOX",kind=""\}} \d', metrics)
    assert f"mail_probe_success{{{labels}}} 1.0" in metrics
    assert 'mailbox="Archive"' not in metrics


async def status_page(tmp_path: Path, collectors: str) -> str:
    """The page of an exporter with these collector sections, before any /metrics scrape."""
    config = tmp_path / "config.yml"
    config.write_text(f"collectors:\n{collectors}")
    exporter = Exporter(config, {})
    client: TestClient[object, object] = TestClient(TestServer(make_app(exporter)))
    await client.start_server()
    try:
        response = await client.get("/")
        assert response.status == 200
        return await response.text()
    finally:
        exporter.stop()
        await client.close()


async def test_queues_show_before_any_scrape(tmp_path: Path) -> None:
    """The page asks the queue collectors themselves: no /metrics scrape has to come first."""
    spool = tmp_path / "spool"
    for queue in ("maildrop", "incoming", "active", "deferred", "hold"):
        (spool / queue).mkdir(parents=True)
    (spool / "deferred" / "4C3F41E0A1B").write_bytes(b"C\x0a100 10 0 1T\x0c1700000000 0M\x00")
    (spool / "active" / "5D4A52F1B2C").write_bytes(b"C\x0a200 10 0 1")
    section = "  postfix_queue:\n    enabled: true\n    source: spool\n"
    page = await status_page(tmp_path, f"{section}    instances: [{{queue_directory: {spool}}}]\n")
    for queue, count, css in (
        ("active", 1, "num"),
        ("deferred", 1, "num warn"),
        ("hold", 0, "num"),
    ):
        row = f'<tr><td>postfix</td><td>postfix</td><td>{queue}</td><td class="{css}">{count}</td>'
        assert row in page, page
    missing = f"{section}    instances: [{{queue_directory: {tmp_path / 'missing'}}}]\n"
    page = await status_page(tmp_path, missing)
    assert "The queues could not be read. postfix_queue: failed: postfix instance" in page, page
    assert f"{tmp_path / 'missing'}" in page.split("<h2>Queues</h2>")[1], page
    none = await status_page(tmp_path, "  backups: {enabled: false}\n")
    assert "No queue collector is enabled (postfix_queue, exim_queue or qmail_queue)." in none


HOSTILE = "<b class=injected>owned</b>" + "x" * 2000
"""What a hostile mailbox server answers to everything: markup, and far too much of it."""


@contextmanager
def hostile_imap() -> Iterator[int]:
    """An IMAP server on loopback that greets, tells its capabilities and refuses every
    other command with ``HOSTILE``; yields its port."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
            for line in self.rfile:
                tag, _, command = line.partition(b" ")
                if command.upper().startswith(b"CAPABILITY"):
                    self.wfile.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK\r\n")
                else:
                    self.wfile.write(tag + b" NO " + HOSTILE.encode() + b"\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_status_page_says_what_failed(tmp_path: Path) -> None:
    """A queue collector on a directory that is no queue, a target and a route on a closed
    port, a route whose mailbox server answers with markup: the page, as Chromium draws it,
    names each failure in its own words, escaped and bounded."""
    not_a_queue = tmp_path / "not-a-queue"
    for queue in ("maildrop", "incoming", "active", "deferred"):  # but no hold
        (not_a_queue / queue).mkdir(parents=True)
    closed = free_port()
    config = tmp_path / "config.yml"
    with hostile_imap() as hostile:
        config.write_text(
            "global: {interval: 1s}\n"
            "modules:\n"
            "  smtp: {protocol: smtp, tls: none, timeout: 2s}\n"
            "  imap: {protocol: imap, tls: none, timeout: 2s, allow_plaintext_auth: true,"
            " auth: {username: probe,"
            " password_env: STATUS_PAGE_PASSWORD}}\n"
            "targets:\n"
            f'  - {{name: gone, address: "127.0.0.1:{closed}", module: smtp}}\n'
            "collectors:\n"
            "  postfix_queue:\n"
            "    enabled: true\n"
            "    source: spool\n"
            f"    instances: [{{queue_directory: {not_a_queue}}}]\n"
            "roundtrip:\n"
            "  - name: closed\n"
            "    interval: 1s\n"
            "    timeout: 5s\n"
            f'    send: {{address: "127.0.0.1:{closed}", module: smtp, from: a@example.com,'
            " to: b@example.com}\n"
            f'    receive: {{address: "127.0.0.1:{closed}", module: imap}}\n'
            "  - name: hostile\n"
            "    interval: 1s\n"
            "    timeout: 5s\n"
            f'    send: {{address: "127.0.0.1:{closed}", module: smtp, from: a@example.com,'
            " to: b@example.com}\n"
            f'    receive: {{address: "127.0.0.1:{hostile}", module: imap}}\n'
        )
        env = {"STATUS_PAGE_PASSWORD": "secret"}
        with served_exporter(tmp_path, config, env=env) as served:
            url = f"http://127.0.0.1:{served.port}/"
            deadline = time.monotonic() + 30
            while not reported(url):
                assert time.monotonic() < deadline, fetch(url)
                time.sleep(0.3)
            dom = chromium("--dump-dom", url)
    rows = {
        match.group(1): match.group(0)
        for match in re.finditer(r"<tr><td>([^<]*)</td>.*?</tr>", dom, re.DOTALL)
    }
    collector = rows["postfix_queue"]
    assert '<td class="down">failing</td>' in collector, collector
    assert "has no hold directory: not a Postfix queue directory" in collector, collector
    queues = dom.split("<h2>Queues</h2>", 1)[1].split("<h2>", 1)[0]
    assert "postfix_queue: failed: postfix instance postfix:" in queues, queues
    assert "has no hold directory" in queues and "enable" not in queues, queues
    # The route's real failure: the stage and what happened there.
    route = rows["closed"]
    assert re.search(r"<td>receive: [^<]*connect[^<]*refused", route, re.I), route
    assert re.search(
        r'<td class="down when">\d\d:\d\d:\d\d UTC \([\d.]+ s ago\)</td>', route
    ), route
    target = rows["gone"]
    assert re.search(r"<td>[\d.]+ s ago</td>", target), target
    assert re.search(r'<td class="down when">\d\d:\d\d:\d\d UTC', target), target
    # The hostile server's reply: shown as text, cut short, never as markup.
    reply = rows["hostile"]
    assert "&lt;b class=injected&gt;owned&lt;/b&gt;" in reply, reply
    assert 'class="injected"' not in dom
    assert len(reply) < 1000 and "xxx…" in reply, reply


def test_status_page_of_a_fresh_install_says_what_to_do(tmp_path: Path) -> None:
    """No config and nothing discovered: the page says so and links to the example config,
    which the exporter serves itself."""
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH without any mail server's tools
    flags = ("--discovery.root", str(tmp_path))
    with served_exporter(tmp_path, None, *flags, env={"PATH": str(empty)}) as served:
        base = f"http://127.0.0.1:{served.port}"
        dom = chromium("--dump-dom", base + "/")
        example = fetch(base + "/config/example")
    steps = dom.split("<h2>Next steps</h2>", 1)[1].split("<h2>", 1)[0]
    assert "No mail server found" in steps, steps
    assert '<a href="/config/example">example config</a>' in steps, steps
    assert "--config.file" in steps and "mail-exporter check-config" in steps, steps
    assert example == (Path(__file__).parents[1] / "examples" / "mail_exporter.yml").read_text()
