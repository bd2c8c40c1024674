"""The exporter's own log lines: logfmt and JSON, and secrets never printed."""

from __future__ import annotations

import json
import logging

import pytest

from mail_exporter.logs import redact, setup_logging


@pytest.fixture(autouse=True)
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:], root.level = handlers, level
    redact([])


def test_logfmt_quotes_and_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "logfmt")
    redact(["hunter2"])
    logging.getLogger("mail_exporter.test").warning(
        "login as %s with %s failed", "probe", "hunter2"
    )
    line = capsys.readouterr().err.strip()
    assert "hunter2" not in line
    assert (
        'level=warn logger=mail_exporter.test msg="login as probe with <redacted> failed"' in line
    )
    assert line.startswith("ts=")


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug", "json")
    logging.getLogger("mail_exporter.test").debug("probe of %s", "mx1")
    record = json.loads(capsys.readouterr().err)
    assert record["level"] == "debug"
    assert record["msg"] == "probe of mx1"


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("warn", "logfmt")
    logging.getLogger("mail_exporter.test").info("hidden")
    assert capsys.readouterr().err == ""


def test_exception_text_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "logfmt")
    redact(["hunter2"])
    try:
        raise RuntimeError("server hung up after: a1 LOGIN probe hunter2")
    except RuntimeError:
        logging.getLogger("mail_exporter.test").exception("login failed")
    output = capsys.readouterr().err
    assert "hunter2" not in output
    assert "LOGIN probe <redacted>" in output
