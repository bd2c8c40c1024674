"""What the served process says when it starts and when it cannot: through the real
process, as an admin reads it on a terminal or in the journal."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mail_exporter.logs import LogfmtFormatter


def start(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mail_exporter", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_a_taken_port_is_one_line(tmp_path: Path, taken_port: int) -> None:
    config = tmp_path / "config.yml"
    config.write_text("collectors: {host: {enabled: true}}\n")
    address = f"127.0.0.1:{taken_port}"
    result = start("--config.file", str(config), "--web.listen-address", address)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if "level=error" in line]
    assert errors == [
        f'{errors[0].split(" level=")[0]} level=error logger=mail_exporter '
        f'msg="cannot listen on {address}: address already in use"'
    ], result.stderr
    starting = next(i for i, line in enumerate(lines) if "starting mail_exporter" in line)
    collectors = next(i for i, line in enumerate(lines) if "collectors started" in line)
    assert starting < collectors, result.stderr


def test_modules_that_do_not_verify_are_named_at_start(tmp_path: Path, taken_port: int) -> None:
    # As discovery writes its modules: each skips verification but port 25's, which is
    # opportunistic by itself and reports an unverified certificate without the key.
    config = tmp_path / "config.yml"
    config.write_text(
        "modules:\n"
        "  smtp: {protocol: smtp, tls: starttls, require_tls: false,"
        " tls_config: {insecure_skip_verify: true}}\n"
        "  imaps: {protocol: imap, tls: implicit, tls_config: {insecure_skip_verify: true}}\n"
        "  pop3s: {protocol: pop3, tls: implicit, tls_config: {insecure_skip_verify: true}}\n"
        "  submission: {protocol: smtp, tls: starttls, tls_config: {insecure_skip_verify: false}}\n"
    )
    result = start("--config.file", str(config), "--web.listen-address", f"127.0.0.1:{taken_port}")
    warnings = [line for line in result.stderr.splitlines() if "level=warn" in line]
    said = [line for line in warnings if "insecure_skip_verify" in line]
    assert len(said) == 1, result.stderr
    assert "modules imaps, pop3s report" in said[0]
    assert "smtp," not in said[0] and "submission" not in said[0]


@pytest.mark.parametrize(
    "breaker", ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]
)
def test_logfmt_values_never_break_the_line(breaker: str) -> None:
    record = logging.LogRecord("mail_exporter", logging.WARNING, __file__, 1,
                               f"server said: 421{breaker}level=error msg=forged", None, None)  # fmt: skip
    line = LogfmtFormatter().format(record)
    assert line.splitlines() == [line], repr(line)
