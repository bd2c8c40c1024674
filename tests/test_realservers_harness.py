"""Self-check of the real-server harness with standard-library clients only.

If these fail, the Postfix/Dovecot fixtures are broken, not the exporter. Clients connect
to "localhost" and verify the server certificate against the test CA.
"""

import base64
import imaplib
import poplib
import smtplib
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import dns.message
import dns.query
import pytest

from tests import dnsserver
from tests import served as served_module
from tests.conftest import new_postfix
from tests.realservers import dns as dns_module
from tests.realservers import dovecot as dovecot_module
from tests.realservers import postfix as postfix_module
from tests.realservers import programs as programs_module
from tests.realservers.dns import Dnsmasq, Zones
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix

pytestmark = pytest.mark.integration

HOST = "localhost"
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def tls(pki: PKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki.ca_file)


def _auth_plain(smtp: smtplib.SMTP, user: str, password: str) -> int:
    # One explicit AUTH PLAIN: smtplib.login() would retry with LOGIN after a failure.
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    code, _ = smtp.docmd("AUTH", f"PLAIN {token}")
    return code


def _submission_over_tls(postfix: Postfix, tls: ssl.SSLContext) -> smtplib.SMTP:
    smtp = smtplib.SMTP(HOST, postfix.submission_port, "client.test", timeout=TIMEOUT)
    smtp.starttls(context=tls)
    smtp.ehlo()
    return smtp


def test_smtp_offers_starttls_and_upgrades(postfix: Postfix, tls: ssl.SSLContext) -> None:
    with smtplib.SMTP(HOST, postfix.smtp_port, "client.test", timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert smtp.starttls(context=tls)[0] == 220
        smtp.ehlo()
        assert not smtp.has_extn("starttls")


def test_submission_offers_auth_only_after_starttls(postfix: Postfix, tls: ssl.SSLContext) -> None:
    with smtplib.SMTP(HOST, postfix.submission_port, "client.test", timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        smtp.starttls(context=tls)
        smtp.ehlo()
        assert "PLAIN" in smtp.esmtp_features["auth"].split()


def test_submission_login(postfix: Postfix, dovecot: Dovecot, tls: ssl.SSLContext) -> None:
    with _submission_over_tls(postfix, tls) as smtp:
        assert _auth_plain(smtp, dovecot.user, dovecot.password) == 235


def test_submission_wrong_password(postfix: Postfix, dovecot: Dovecot, tls: ssl.SSLContext) -> None:
    with _submission_over_tls(postfix, tls) as smtp:
        assert _auth_plain(smtp, dovecot.user, "wrong-secret") == 535


def test_smtps_login(postfix: Postfix, dovecot: Dovecot, tls: ssl.SSLContext) -> None:
    with smtplib.SMTP_SSL(
        HOST, postfix.smtps_port, "client.test", timeout=TIMEOUT, context=tls
    ) as smtp:
        smtp.ehlo()
        assert _auth_plain(smtp, dovecot.user, dovecot.password) == 235


def test_imap_starttls_login(dovecot: Dovecot, tls: ssl.SSLContext) -> None:
    with imaplib.IMAP4(HOST, dovecot.imap_port, timeout=TIMEOUT) as imap:
        assert "STARTTLS" in imap.capabilities
        imap.starttls(tls)
        assert imap.login(dovecot.user, dovecot.password)[0] == "OK"


def test_imaps_login(dovecot: Dovecot, tls: ssl.SSLContext) -> None:
    with imaplib.IMAP4_SSL(HOST, dovecot.imaps_port, ssl_context=tls, timeout=TIMEOUT) as imap:
        assert imap.login(dovecot.user, dovecot.password)[0] == "OK"


def test_pop3_stls_login(dovecot: Dovecot, tls: ssl.SSLContext) -> None:
    pop = poplib.POP3(HOST, dovecot.pop3_port, timeout=TIMEOUT)
    try:
        assert "STLS" in pop.capa()
        pop.stls(tls)
        pop.user(dovecot.user)
        assert pop.pass_(dovecot.password).startswith(b"+OK")
    finally:
        pop.quit()


def test_pop3s_login(dovecot: Dovecot, tls: ssl.SSLContext) -> None:
    pop = poplib.POP3_SSL(HOST, dovecot.pop3s_port, context=tls, timeout=TIMEOUT)
    try:
        pop.user(dovecot.user)
        assert pop.pass_(dovecot.password).startswith(b"+OK")
    finally:
        pop.quit()


def test_ipv6_loopback(dovecot: Dovecot, tls: ssl.SSLContext) -> None:
    # The certificate carries ::1 as an IP SAN, so this verifies as strictly as "localhost".
    with imaplib.IMAP4_SSL("::1", dovecot.imaps_port, ssl_context=tls, timeout=TIMEOUT) as imap:
        assert imap.login(dovecot.user, dovecot.password)[0] == "OK"


def test_submitted_mail_reaches_the_imap_inbox(
    postfix: Postfix, dovecot: Dovecot, tls: ssl.SSLContext
) -> None:
    subject = f"harness round trip {time.monotonic_ns()}"
    with _submission_over_tls(postfix, tls) as smtp:
        _auth_plain(smtp, dovecot.user, dovecot.password)
        smtp.sendmail(dovecot.user, [dovecot.user], f"Subject: {subject}\r\n\r\nhello\r\n")
    with imaplib.IMAP4_SSL(HOST, dovecot.imaps_port, ssl_context=tls, timeout=TIMEOUT) as imap:
        imap.login(dovecot.user, dovecot.password)
        deadline = time.monotonic() + TIMEOUT
        while not _find_subject(imap, subject):
            assert time.monotonic() < deadline, "the message never reached the inbox"
            time.sleep(0.02)


def _find_subject(imap: imaplib.IMAP4, subject: str) -> bool:
    # Re-selecting makes Dovecot rescan the Maildir for newly delivered mail.
    imap.select("INBOX", readonly=True)
    _, found = imap.search(None, "SUBJECT", f'"{subject}"')
    return bool(found[0])


# A port can be taken between free_port() and the server's bind, by anything else running
# on the machine (conftest's taken_port): then the start is tried again on fresh ports.


def hand_out_first(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, port: int
) -> None:
    """``module.name()`` returns ``port`` once, then what it would have."""
    real = getattr(module, name)
    first = [port]
    monkeypatch.setattr(module, name, lambda: first.pop() if first else real())


def test_dovecot_starts_on_other_ports_when_one_is_taken(
    tmp_path: Path, pki: PKI, tls: ssl.SSLContext, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    hand_out_first(monkeypatch, dovecot_module, "free_port", taken_port)
    server = Dovecot(tmp_path, pki.server_cert, pki.server_key)
    assert server.imap_port == taken_port
    server.start()
    try:
        assert server.imap_port != taken_port
        with imaplib.IMAP4(HOST, server.imap_port, timeout=TIMEOUT) as imap:
            imap.starttls(tls)
            assert imap.login(server.user, server.password)[0] == "OK"
    finally:
        server.stop()


def test_postfix_starts_on_other_ports_when_one_is_taken(
    tmp_path_factory: pytest.TempPathFactory,
    pki: PKI,
    dovecot: Dovecot,
    taken_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hand_out_first(monkeypatch, postfix_module, "free_port", taken_port)
    server = new_postfix(tmp_path_factory, pki, dovecot)
    assert server.smtp_port == taken_port
    server.start()
    try:
        assert server.smtp_port != taken_port
        with smtplib.SMTP(HOST, server.smtp_port, "client.test", timeout=TIMEOUT) as smtp:
            assert smtp.ehlo()[0] == 250
    finally:
        server.stop()


def test_dnsmasq_starts_on_another_port_when_its_tcp_port_is_taken(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    hand_out_first(monkeypatch, dns_module, "_free_udp_and_tcp_port", taken_port)
    with Dnsmasq(
        tmp_path, Zones().local("harness.test").a("mx.harness.test", "127.0.0.1")
    ) as server:
        assert server.port != taken_port
        answer = dns.query.tcp(
            dns.message.make_query("mx.harness.test", "A"),
            "127.0.0.1",
            port=server.port,
            timeout=TIMEOUT,
        )
        assert answer.answer


def test_dns_server_takes_another_port_pair_when_tcp_is_taken(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    bind = dnsserver._UdpServer.server_bind
    first = [taken_port]

    def bind_first_to_taken(server: dnsserver._UdpServer) -> None:
        if first:
            server.server_address = ("127.0.0.1", first.pop())
        bind(server)

    monkeypatch.setattr(dnsserver._UdpServer, "server_bind", bind_first_to_taken)
    server = dnsserver.DnsServer(dnsserver.Zone({("mx.harness.test", "A"): ["127.0.0.1"]}))
    try:
        assert server.port != taken_port
        query = dns.message.make_query("mx.harness.test", "A")
        for send in (dns.query.udp, dns.query.tcp):
            assert send(query, "127.0.0.1", port=server.port, timeout=TIMEOUT).answer
    finally:
        server.close()


class _AnswersEverything(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answered_port() -> Iterator[int]:
    """A port another HTTP server holds, answering 200 to everything: an exporter or a
    Prometheus of a parallel session answers /-/healthy and /-/ready the same."""
    other = ThreadingHTTPServer(("127.0.0.1", 0), _AnswersEverything)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        yield other.server_address[1]
    finally:
        other.shutdown()
        other.server_close()


def test_an_exporter_is_not_confused_with_another_server_on_its_port(
    tmp_path: Path, answered_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    hand_out_first(monkeypatch, programs_module, "free_port", answered_port)
    config = tmp_path / "config.yml"
    config.write_text("global: {interval: 30s}\n")
    with served_module.served_exporter(tmp_path, config) as served:
        assert served.port != answered_port
        assert "mail_exporter_build_info" in served_module.get(served.port, "/metrics").body


def test_prometheus_is_not_confused_with_another_server_on_its_port(
    tmp_path: Path, answered_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    hand_out_first(monkeypatch, programs_module, "free_port", answered_port)
    config = tmp_path / "prometheus.yml"
    config.write_text("scrape_configs: []\n")
    with served_module.served_prometheus(tmp_path, config) as prometheus:
        assert prometheus.port != answered_port
        build = served_module.get(prometheus.port, "/api/v1/status/buildinfo")
        assert '"status":"success"' in build.body


def test_alertmanager_starts_on_another_port_when_its_port_is_taken(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    hand_out_first(monkeypatch, programs_module, "free_port", taken_port)
    config = tmp_path / "alertmanager.yml"
    config.write_text("route: {receiver: nobody}\nreceivers: [{name: nobody}]\n")
    with served_module.served_alertmanager(tmp_path, config) as alertmanager:
        assert alertmanager.port != taken_port
        assert "uptime" in served_module.get(alertmanager.port, "/api/v2/status").body
