"""The command line speaks one language: durations as the config writes them, the config
named the same way everywhere, typos answered with the name meant, summaries that count
what runs, collectors in alphabetical order, and a probe report in the order things
happened."""

from __future__ import annotations

import asyncio
import datetime
import re
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from mail_exporter.cli import main
from mail_exporter.collectors.base import COLLECTORS
from tests.realservers.pki import PKI, _issuer, issue_server_cert, write_cert, write_key
from tests.realservers.postfix import Postfix
from tests.scripted import scripted_server, server_context, smtp_script

EXAMPLE = Path(__file__).parent.parent / "examples" / "mail_exporter.yml"


def invoke(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(arguments))
    return result.exit_code, result.output


def test_probe_timeout_takes_a_duration(taken_port: int) -> None:
    # A port that never answers a mail greeting: the probe fails (1); a refused flag is 2.
    for timeout in ("2s", "1500ms", "2"):
        code, output = invoke("probe", "--timeout", timeout, f"127.0.0.1:{taken_port}")
        assert code == 1 and "Verdict: FAILED" in output, output
    code, output = invoke("probe", "--timeout", "5x", f"127.0.0.1:{taken_port}")
    assert code == 2 and "invalid duration '5x'" in output, output


def test_check_config_takes_config_file_as_the_server_does() -> None:
    for arguments in (
        ["check-config", "--config.file", str(EXAMPLE)],
        ["--config.file", str(EXAMPLE), "check-config"],
        ["check-config", str(EXAMPLE)],
    ):
        code, output = invoke(*arguments)
        assert code == 0 and f"{EXAMPLE}: OK (" in output, (arguments, output)
    code, output = invoke("check-config")
    assert code == 2 and "give PATH or --config.file" in output


def test_check_config_counts_round_trips_and_collectors(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "modules: {m: {protocol: smtp}}\n"
        "targets: [{name: a, address: 'localhost:25', module: m}]\n"
        "collectors: {logs: {enabled: true}, host: {enabled: true}}\n"
    )
    code, output = invoke("check-config", str(config))
    assert code == 0
    assert output == f"{config}: OK (1 module, 1 target, 0 round trips, 2 collectors: host, logs)\n"


def test_typos_are_answered_with_the_name_meant(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "globl: {interval: 30s}\n"
        "modules:\n"
        "  smtp_starttls: {protocol: smtp, tls: starttls, tls_confg: {server_nme: x}, smtp: {ehlo_nam: x}}\n"
        "targets: [{name: a, address: 'localhost:25', module: smtp_startls}]\n"
        "collectors: {postfix_queu: {enabled: true}}\n"
    )
    code, output = invoke("check-config", str(config))
    assert code == 1
    for problem in (
        "globl (line 1): unknown key (did you mean global?)",
        "modules.smtp_starttls.tls_confg (line 3): unknown key (did you mean tls_config?)",
        "modules.smtp_starttls.smtp.ehlo_nam (line 3): unknown key (did you mean ehlo_name?)",
        "targets[0].module (line 4): unknown module 'smtp_startls' (did you mean smtp_starttls?)",
        "collectors.postfix_queu (line 5): unknown key: there is no collector postfix_queu (did you mean postfix_queue?)",
    ):
        assert problem in output, output
    code, output = invoke("probe", "--module", "imap", "127.0.0.1:1")  # the built-in config's
    assert code == 2 and "unknown module 'imap' (did you mean imaps?)" in output, output


def test_help_lists_collectors_alphabetically() -> None:
    code, output = invoke("--help")
    assert code == 0
    listed = re.findall(r"--collector\.(\w+) /", output)
    assert listed == sorted(COLLECTORS), listed


def test_probe_report_phases_in_the_order_they_happened(postfix: Postfix, pki: PKI) -> None:
    code, output = invoke("probe", "--protocol", "smtp", "--tls", "starttls",
                          "--ca-file", str(pki.ca_file), f"localhost:{postfix.smtp_port}")  # fmt: skip
    assert code == 0, output
    phases = output[output.index("Phases:") :].splitlines()[1:]
    names = [line.split()[0] for line in phases if line.startswith("  ") and line.endswith(" ms")]
    assert names[names.index("banner") :] == [
        "banner",
        "capabilities",
        "starttls",
        "tls_handshake",
        "quit",
        "total",
    ], output


async def test_probe_report_never_shows_minus_zero_days(tmp_path: Path, pki: PKI) -> None:
    """A certificate that expired a minute ago is 0.0 days from now, not -0.0."""
    now = datetime.datetime.now(datetime.UTC)
    cert, key = issue_server_cert(_issuer(pki), [x509.DNSName("localhost")],
                                  now - datetime.timedelta(days=1), now - datetime.timedelta(minutes=1))  # fmt: skip
    context = server_context(
        write_cert(tmp_path / "c.pem", cert), write_key(tmp_path / "k.pem", key)
    )
    async with scripted_server(smtp_script(["220 hi"]), context) as address:
        runner = CliRunner()
        result = await _in_thread(runner, ["probe", "--protocol", "smtp", "--tls", "implicit",
                                           "--insecure-skip-verify", address])  # fmt: skip
    assert "days)" in result, result
    assert "-0.0 days" not in result and "(+0.0 days)" in result, result


async def _in_thread(runner: CliRunner, arguments: list[str]) -> str:
    """The command in a thread: it runs an event loop of its own, beside the server's."""
    result = await asyncio.to_thread(runner.invoke, main, arguments)
    return result.output
