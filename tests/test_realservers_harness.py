"""Self-check of the real-server harness with standard-library clients only.

If these fail, the Postfix/Dovecot fixtures are broken, not the exporter. Clients connect
to "localhost" and verify the server certificate against the test CA.
"""

import base64
import imaplib
import poplib
import smtplib
import ssl
import time

import pytest

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
