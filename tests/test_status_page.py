"""The status page, rendered by a real headless Chromium with real probe results behind it."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.realservers.runtime import free_port

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
        "targets:\n"
        f'  - {{name: mx-main, address: "localhost:{postfix.smtp_port}", module: smtp}}\n'
        f'  - {{name: store, address: "127.0.0.1:{dovecot.imaps_port}", module: imaps}}\n'
        f'  - {{name: gone, address: "127.0.0.1:{postfix.refused_port}", module: smtp}}\n'
        "roundtrip:\n"
        "  - name: loop\n"
        "    interval: 2s\n"
        "    timeout: 10s\n"
        f'    send: {{address: "localhost:{postfix.submission_port}", module: submission,'
        f" from: {dovecot.user}, to: {dovecot.user}}}\n"
        f'    receive: {{address: "localhost:{dovecot.imaps_port}", module: mailbox}}\n'
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mail_exporter", "--config.file", str(config),
         "--web.listen-address", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL,
        env={**os.environ, "STATUS_PAGE_PASSWORD": dovecot.password},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while "probe now" not in fetch(url) or 'class="pending"' in fetch(url):
            assert time.monotonic() < deadline, "the exporter's probes never reported"
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(10)


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
    screenshot = tmp_path / "status.png"
    chromium(f"--screenshot={screenshot}", "--window-size=1280,800", exporter_url)
    assert png_size(screenshot) == (1280, 800)
    assert screenshot.stat().st_size > 10_000  # a page with text and a table, not a blank one
