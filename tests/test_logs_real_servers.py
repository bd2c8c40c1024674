"""The log collector on the logs of a real Postfix and Dovecot, moved by real mail.

A private Postfix (tighter ``mynetworks``: only 127.0.0.1, so a client on 127.0.0.2 is
an outsider, ``smtpd_tls_loglevel = 1``, and one more smtpd service whose
``syslog_name`` does not start with ``postfix``) delivers to the session's Dovecot. The
collector follows both logs from their end, the test does one thing of each kind (mail
through smtpd and through the sendmail command among them), and the counters must move
by exactly those amounts. promtool then checks the output.
"""

from __future__ import annotations

import base64
import imaplib
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mail_exporter.collectors.logs.collector import LogsCollector
from mail_exporter.collectors.logs.config import LogsConfig
from tests.conftest import new_postfix
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix, _any_cert
from tests.realservers.runtime import free_port

pytestmark = pytest.mark.integration

OWN_SYSLOG_NAME = "submission-ext"
"""master.cf ``-o syslog_name=``: its lines are tagged ``submission-ext/smtpd``."""


class StrictPostfix(Postfix):
    def _take_ports(self) -> None:
        super()._take_ports()
        self.own_name_port = free_port()

    def _main_cf(self) -> str:
        text = (
            super()
            ._main_cf()
            .replace("mynetworks = 127.0.0.0/8, [::1]/128", "mynetworks = 127.0.0.1/32")
        )
        return text + "smtpd_tls_loglevel = 1\n"

    def _master_cf(self) -> str:
        return (
            super()._master_cf()
            + f"{self.own_name_port} inet n - n - - smtpd\n  -o syslog_name={OWN_SYSLOG_NAME}\n"
        )


@pytest.fixture(scope="module")
def strict_postfix(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot
) -> Iterator[StrictPostfix]:
    server = new_postfix(tmp_path_factory, pki, dovecot, StrictPostfix, "postfix-logs")
    server.start()
    yield server
    server.stop()


def quiet(path: Path, seconds: float = 0.5) -> None:
    """Wait until nothing has been written to ``path`` for ``seconds``."""
    size = -1
    while path.stat().st_size != size:
        size = path.stat().st_size
        time.sleep(seconds)


def wait_until_following(collector: LogsCollector) -> None:
    """Until every follower has opened its source (10 s at most)."""
    deadline = time.monotonic() + 10
    while not all(follower.up for follower in collector.followers):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def samples(collector: LogsCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def send_mail(server: Postfix) -> None:
    """Delivered, deferred and bounced (whose notice to the sender is deferred too)."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
        for recipient in ("probe@test.local", "bob@elsewhere.example", "nobody@test.local"):
            client.sendmail("alice@example.org", [recipient], "Subject: t\r\n\r\nhi\r\n")


def sendmail(server: Postfix) -> None:
    """One message through the sendmail command: postdrop, then pickup."""
    command = shutil.which("sendmail", path="/usr/sbin:/usr/bin")
    assert command, "sendmail is missing: apt-get install postfix"
    subprocess.run(
        [command, "-C", str(server.config_dir), "-f", "root@test.local", "-i", "probe@test.local"],
        input=b"Subject: t\n\nhi\n", check=True, timeout=30,
    )  # fmt: skip


def relay_attempt(server: Postfix) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, source_address=("127.0.0.2", 0)) as client:
        client.ehlo()
        client.mail("x@example.org")
        code, _ = client.rcpt("y@outside.example")
        assert code == 454


def wrong_sasl_password(server: Postfix) -> None:
    """One AUTH PLAIN with a wrong password (smtplib's login() would try every mechanism)."""
    with smtplib.SMTP("127.0.0.1", server.submission_port) as client:
        client.starttls(context=_any_cert())
        client.ehlo()
        token = base64.b64encode(b"\0probe@test.local\0wrong").decode()
        code, _ = client.docmd("AUTH", f"PLAIN {token}")
        assert code == 535


def own_syslog_name_session(server: StrictPostfix) -> None:
    with smtplib.SMTP("127.0.0.1", server.own_name_port) as client:
        client.ehlo()


def imap_logins(dovecot: Dovecot) -> None:
    with (
        imaplib.IMAP4("127.0.0.1", dovecot.imap_port) as client,
        pytest.raises(imaplib.IMAP4.error),
    ):
        client.login(dovecot.user, "wrong")
    with imaplib.IMAP4("127.0.0.1", dovecot.imap_port) as client:
        client.login(dovecot.user, dovecot.password)
        client.logout()


EXPECTED = {
    ("mail_messages_received_total", (("mta", "postfix"),)): 5,
    ("mail_messages_submitted_total", (("mta", "postfix"), ("service", "smtpd"))): 3,
    ("mail_messages_submitted_total", (("mta", "postfix"), ("service", "pickup"))): 1,
    ("mail_deliveries_total", (("mta", "postfix"), ("status", "sent"), ("transport", "lmtp"))): 2,
    ("mail_deliveries_total", (("mta", "postfix"), ("status", "bounced"), ("transport", "lmtp"))): 1,
    ("mail_deliveries_total", (("mta", "postfix"), ("status", "deferred"), ("transport", "smtp"))): 2,
    ("mail_deliveries_total", (("mta", "dovecot"), ("status", "sent"), ("transport", "lmtp"))): 2,
    ("mail_bounces_generated_total", (("kind", "non_delivery"), ("mta", "postfix"))): 1,
    ("mail_smtpd_connections_total", (("mta", "postfix"), ("service", "smtpd"))): 2,
    ("mail_smtpd_connections_total", (("mta", "postfix"), ("service", "submission/smtpd"))): 1,
    ("mail_smtpd_connections_total", (("mta", "postfix"),
                                      ("service", f"{OWN_SYSLOG_NAME}/smtpd"))): 1,
    ("mail_smtpd_rejects_total", (("mta", "postfix"), ("reason", "relay_denied"), ("service", "smtpd"))): 1,
    ("mail_smtpd_reject_stages_total", (("mta", "postfix"), ("service", "smtpd"), ("stage", "RCPT"))): 1,
    ("mail_auth_failures_total", (("mta", "postfix"), ("service", "submission/smtpd"))): 1,
    ("mail_auth_failures_total", (("mta", "dovecot"), ("service", "imap"))): 1,
    ("mail_logins_total", (("mechanism", "PLAIN"), ("mta", "dovecot"), ("service", "imap"))): 1,
    ("mail_tls_connections_total", (("mta", "postfix"), ("service", "submission/smtpd"),
                                    ("trust", "anonymous"), ("version", "TLS 1.3"))): 1,
    ("mail_delivery_delay_seconds_count", (("mta", "postfix"), ("stage", "transmission"),
                                           ("transport", "lmtp"))): 3,
}  # fmt: skip


def test_counters_move_by_exactly_what_happened(
    strict_postfix: StrictPostfix, dovecot: Dovecot
) -> None:
    quiet(strict_postfix.log_path)
    settings = LogsConfig.model_validate({
        "enabled": True, "poll_interval": "50ms",
        "sources": [{"path": str(strict_postfix.log_path)},
                    {"path": str(dovecot.log_path), "format": "dovecot"}],
        "postfix_syslog_names": [OWN_SYSLOG_NAME],
    })  # fmt: skip
    collector = LogsCollector(settings)
    try:
        wait_until_following(collector)
        before = samples(collector)
        send_mail(strict_postfix)
        sendmail(strict_postfix)
        relay_attempt(strict_postfix)
        wrong_sasl_password(strict_postfix)
        own_syslog_name_session(strict_postfix)
        imap_logins(dovecot)
        deadline = time.monotonic() + 20
        while not all(samples(collector).get(key, 0) - before.get(key, 0) >= n
                      for key, n in EXPECTED.items()):  # fmt: skip
            assert time.monotonic() < deadline, samples(collector)
            time.sleep(0.1)
        quiet(strict_postfix.log_path)
        after = samples(collector)
        moved = {key: after.get(key, 0) - before.get(key, 0) for key in EXPECTED}
        assert moved == EXPECTED
        assert value(after, "mail_log_lines_total", mta="postfix", result="unsupported") == 0
        assert value(after, "mail_log_lines_total", mta="dovecot", result="unsupported") == 0
        check_with_promtool(collector)
    finally:
        collector.close()


def check_with_promtool(collector: LogsCollector) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus"
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    exposition = generate_latest(registry)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
