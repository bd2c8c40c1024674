"""SMTP security checks against a real Postfix on loopback: an open relay and a server as
shipped, relaying after a login through real Dovecot SASL, VRFY on and off, a login
offered before STARTTLS; nothing queued by any check; the real exporter's /metrics,
/probe and ``mail-exporter probe`` report.

Every listener of the private Postfix keeps the default ``smtpd_relay_restrictions``
(``permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination``) and differs in
``mynetworks`` only, as a real server does: the open one trusts every address (the classic
open relay; Postfix refuses to start an smtpd whose restrictions are a bare ``permit``), the
others none of the loopback ones, so the probe is an outside client there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import Phase, ProbeResult, run_probe
from mail_exporter.targets import parse_address
from tests.conftest import new_postfix
from tests.realservers.dovecot import MAIL_DOMAIN, Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.realservers.runtime import free_port
from tests.served import get, served_exporter
from tests.test_web import sample

pytestmark = pytest.mark.integration

PASSWORD_VARIABLE = "POSTURE_TEST_PASSWORD"
RELAY_CHECK = {"mail_from": "a@outside.example", "rcpt_to": "b@elsewhere.example"}
OUTSIDE = "-o mynetworks=192.0.2.0/24"
"""No loopback address is trusted: the probe is an outside client."""

LISTENERS = {
    "open_relay": ["-o mynetworks=0.0.0.0/0,[::]/0"],
    "shipped": [OUTSIDE],
    "no_vrfy": [OUTSIDE, "-o disable_vrfy_command=yes"],
    "submission": [OUTSIDE, "-o smtpd_sasl_auth_enable=yes", "-o smtpd_tls_auth_only=yes"],
    "login_before_tls": [OUTSIDE, "-o smtpd_sasl_auth_enable=yes", "-o smtpd_tls_auth_only=no"],
}


class PosturePostfix(Postfix):
    """Postfix with a listener for each of :data:`LISTENERS` (``ports[name]``), which knows
    the Dovecot user of its virtual domain and no one else (so VRFY can tell them apart)."""

    def _take_ports(self) -> None:
        super()._take_ports()
        self.ports = {name: free_port() for name in LISTENERS}

    def _main_cf(self) -> str:
        return super()._main_cf() + f"virtual_mailbox_maps = inline:{{ probe@{MAIL_DOMAIN}=ok }}\n"

    def _master_cf(self) -> str:
        services = "".join(
            f"{self.ports[name]} inet n - n - - smtpd\n" + "".join(f"  {o}\n" for o in options)
            for name, options in LISTENERS.items()
        )
        return super()._master_cf() + services

    def queued(self) -> list[dict[str, Any]]:
        """Every message in any of its queues, as ``postqueue -j`` lists them."""
        listing = subprocess.run(
            ["postqueue", "-c", str(self.config_dir), "-j"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return [json.loads(line) for line in listing.stdout.splitlines()]


@pytest.fixture(scope="module")
def postfix(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot
) -> Iterator[PosturePostfix]:
    server = new_postfix(tmp_path_factory, pki, dovecot, PosturePostfix, "postfix-posture")
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch, dovecot: Dovecot) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, dovecot.password)


def module(pki: PKI, **settings: Any) -> ModuleConfig:
    return ModuleConfig.model_validate({
        "protocol": "smtp", "tls": "starttls", "timeout": "10s",
        "tls_config": {"ca_file": str(pki.ca_file)}, **settings,
    })  # fmt: skip


def login(dovecot: Dovecot) -> dict[str, str]:
    return {"username": dovecot.user, "password_env": PASSWORD_VARIABLE}


async def probe(port: int, mod: ModuleConfig) -> ProbeResult:
    result = await run_probe(parse_address(f"localhost:{port}"), mod, mod.timeout_seconds)
    assert result.success, "\n".join(result.log)
    return result


def said(result: ProbeResult) -> list[str]:
    """What the server answered, from the probe's session log."""
    return [line.split(" S: ", 1)[1] for line in result.log if " S: " in line]


@pytest.mark.parametrize(("listener", "open_relay"), [("open_relay", True), ("shipped", False)])
async def test_open_relay_and_shipped_and_nothing_queued(
    postfix: PosturePostfix, pki: PKI, listener: str, open_relay: bool
) -> None:
    result = await probe(postfix.ports[listener], module(pki, smtp={"relay_check": RELAY_CHECK}))
    assert result.tls is not None  # the check ran after STARTTLS and the EHLO after it
    posture = result.smtp_posture
    assert posture is not None and posture.relay is not None
    assert (posture.relay.after_login, posture.relay.allowed) == (False, open_relay)
    rcpt_answer = said(result)[-3]  # then RSET's and QUIT's
    assert rcpt_answer.startswith("250 2.1.5" if open_relay else "454 4.7.1"), result.log
    assert Phase.POSTURE in result.phases
    assert postfix.queued() == []


async def test_relay_after_a_login_through_dovecot_sasl(
    postfix: PosturePostfix, pki: PKI, dovecot: Dovecot
) -> None:
    port = postfix.ports["submission"]
    authenticated = {"relay_check": {**RELAY_CHECK, "authenticated": True}}
    result = await probe(port, module(pki, auth=login(dovecot), smtp=authenticated))
    assert Phase.AUTH in result.phases
    posture = result.smtp_posture
    assert posture is not None and posture.relay is not None
    assert (posture.relay.after_login, posture.relay.allowed) == (True, True)
    # The same port without the login relays nothing.
    anonymous = await probe(port, module(pki, smtp={"relay_check": RELAY_CHECK}))
    posture = anonymous.smtp_posture
    assert posture is not None and posture.relay is not None
    assert (posture.relay.after_login, posture.relay.allowed) == (False, False)
    assert postfix.queued() == []


@pytest.mark.parametrize(
    ("listener", "vrfy", "answers"),
    [
        ("shipped", True, ["252 2.0.0", "550 5.1.1", "500 5.5.2"]),
        ("no_vrfy", False, ["502 5.5.1", "500 5.5.2"]),
    ],
)
async def test_vrfy_on_and_off(
    postfix: PosturePostfix, pki: PKI, dovecot: Dovecot, listener: str, vrfy: bool,
    answers: list[str],
) -> None:  # fmt: skip
    check = {"enumeration_check": {"address": dovecot.user}}
    result = await probe(postfix.ports[listener], module(pki, smtp=check))
    posture = result.smtp_posture
    assert posture is not None
    # Postfix has no EXPN: "500 5.5.2 Error: command not recognized".
    assert posture.enumeration == {"VRFY": vrfy, "EXPN": False}
    codes = [line[:9] for line in said(result)[-len(answers) - 1 : -1]]
    assert codes == answers, result.log


async def test_login_offered_before_starttls(postfix: PosturePostfix, pki: PKI) -> None:
    exposed = await probe(postfix.ports["login_before_tls"], module(pki))
    assert exposed.plaintext_auth_offered is True
    hidden = await probe(postfix.ports["submission"], module(pki))  # smtpd_tls_auth_only
    assert hidden.plaintext_auth_offered is False


def write_config(path: Path, pki: PKI, dovecot: Dovecot, postfix: PosturePostfix) -> Path:
    ca = f"tls_config: {{ca_file: {pki.ca_file}}}"
    checks = (
        "smtp: {relay_check: {mail_from: a@outside.example, rcpt_to: b@elsewhere.example}, "
        f"enumeration_check: {{address: {dovecot.user}}}}}"
    )
    after_login = (
        f"auth: {{username: {dovecot.user}, password_env: {PASSWORD_VARIABLE}}}, smtp: "
        "{relay_check: {mail_from: a@outside.example, rcpt_to: b@elsewhere.example, "
        "authenticated: true}}"
    )
    ports = postfix.ports
    path.write_text(
        "global: {interval: 1s}\n"
        "modules:\n"
        f"  posture: {{protocol: smtp, tls: starttls, {ca}, {checks}}}\n"
        f"  relay_after_login: {{protocol: smtp, tls: starttls, {ca}, {after_login}}}\n"
        "targets:\n"
        f'  - {{name: open, address: "localhost:{ports["open_relay"]}", module: posture}}\n'
        f'  - {{name: shipped, address: "localhost:{ports["shipped"]}", module: posture}}\n'
        f'  - {{name: no-vrfy, address: "localhost:{ports["no_vrfy"]}", module: posture}}\n'
        f'  - {{name: submission, address: "localhost:{ports["submission"]}", '
        "module: relay_after_login}\n"
    )
    return path


EXPECTED = {
    ("mail_smtp_open_relay", "open", ()): 1.0,
    ("mail_smtp_open_relay", "shipped", ()): 0.0,
    ("mail_smtp_open_relay", "no-vrfy", ()): 0.0,
    ("mail_smtp_auth_relay_allowed", "submission", ()): 1.0,
    ("mail_smtp_user_enumeration", "open", (("command", "VRFY"),)): 1.0,
    ("mail_smtp_user_enumeration", "shipped", (("command", "EXPN"),)): 0.0,
    ("mail_smtp_user_enumeration", "no-vrfy", (("command", "VRFY"),)): 0.0,
    ("mail_probe_plaintext_auth_offered", "submission", ()): 0.0,
    ("mail_probe_success", "open", ()): 1.0,
}


def reported(text: str, name: str, target: str, extra: tuple[tuple[str, str], ...]) -> float:
    module_name = "relay_after_login" if target == "submission" else "posture"
    labels = {"target": target, "module": module_name, "protocol": "smtp", **dict(extra)}
    return sample(text, name, labels)


def test_the_served_exporter_reports_the_checks(
    tmp_path: Path, pki: PKI, dovecot: Dovecot, postfix: PosturePostfix
) -> None:
    config = write_config(tmp_path / "config.yml", pki, dovecot, postfix)
    env = {PASSWORD_VARIABLE: dovecot.password}
    with served_exporter(tmp_path, config, env=env) as served:
        deadline = time.monotonic() + 30
        while True:
            text = get(served.port, "/metrics").body
            try:
                found = {key: reported(text, *key) for key in EXPECTED}
                break
            except AssertionError:  # not every target has reported yet
                assert time.monotonic() < deadline, text
                time.sleep(0.3)
        assert found == EXPECTED
        port = postfix.ports["open_relay"]
        answer = get(served.port, f"/probe?target=localhost:{port}&module=posture")
        assert answer.status == 200, answer.body
        assert sample(answer.body, "mail_smtp_open_relay", {"protocol": "smtp"}) == 1.0
        vrfy = sample(answer.body, "mail_smtp_user_enumeration", protocol="smtp", command="VRFY")
        assert vrfy == 1.0
    assert postfix.queued() == []


def test_the_probe_command_reports_the_verdicts(
    tmp_path: Path, pki: PKI, dovecot: Dovecot, postfix: PosturePostfix
) -> None:
    config = write_config(tmp_path / "config.yml", pki, dovecot, postfix)
    target = f"localhost:{postfix.ports['no_vrfy']}"
    command = [sys.executable, "-m", "mail_exporter", "probe", "--config.file", str(config)]
    done = subprocess.run(
        [*command, "--module", "posture", target],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "Open relay:           no" in lines
    assert "VRFY enumerates:      no" in lines
    assert "EXPN enumerates:      no" in lines


def test_the_probe_command_runs_the_checks_it_is_asked_for(
    tmp_path: Path, pki: PKI, dovecot: Dovecot, postfix: PosturePostfix
) -> None:
    """--relay-check and --enumeration-check on an ad hoc module and on a configured one
    (which logs in, so its relay check comes after the login)."""
    config = write_config(tmp_path / "config.yml", pki, dovecot, postfix)

    def probe(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mail_exporter", "probe", *arguments],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, PASSWORD_VARIABLE: dovecot.password},
        )

    relay = ("--relay-check", "a@outside.example", "b@elsewhere.example")
    adhoc = probe("--protocol", "smtp", "--tls", "starttls", "--ca-file", str(pki.ca_file),
                  "--tls-scan", *relay, "--enumeration-check", dovecot.user,
                  f"localhost:{postfix.ports['open_relay']}")  # fmt: skip
    assert adhoc.returncode == 0, adhoc.stdout + adhoc.stderr
    lines = adhoc.stdout.splitlines()
    assert {"Open relay:           yes", "VRFY enumerates:      yes"} <= set(lines)
    scan = lines[lines.index("TLS scan:") + 1 : lines.index("Security findings:")]
    assert {"  TLS 1.3              accepted", "  TLS 1.2              accepted"} <= set(scan)
    assert scan[-2].startswith("  scanned ") and scan[-2].endswith(", complete"), scan
    found = lines[lines.index("Security findings:") + 1 : lines.index("Session log:")]
    assert found[:2] == ["  critical  open relay", "  warning   VRFY tells users apart"], found
    configured = probe("--config.file", str(config), "--module", "relay_after_login", *relay,
                       f"localhost:{postfix.ports['submission']}")  # fmt: skip
    assert configured.returncode == 0, configured.stdout + configured.stderr
    assert "Relay after login:    yes" in configured.stdout.splitlines()
    wrong = probe("--protocol", "imap", *relay, "localhost:1")
    assert wrong.returncode == 2
    assert "--relay-check and --enumeration-check are checks of SMTP" in wrong.stderr
    refused = probe("--config.file", str(config), "--module", "relay_after_login",
                    "--enumeration-check", dovecot.user, "localhost:1")  # fmt: skip
    assert (
        refused.returncode == 2 and "without a login cannot run" in refused.stderr
    ), refused.stderr
    assert postfix.queued() == []
