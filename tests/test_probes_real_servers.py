"""Every protocol and TLS mode against real Postfix and Dovecot on loopback, login included."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import FailureReason, Phase, ProbeResult, run_probe
from mail_exporter.targets import parse_address
from tests.conftest import new_postfix
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix

pytestmark = pytest.mark.integration

PASSWORD_VARIABLE = "MAIL_EXPORTER_TEST_PASSWORD"

# (case id, protocol, tls, server, port attribute, login mechanism or None)
CASES = [
    ("smtp-plain", "smtp", "none", "postfix", "smtp_port", None),
    ("smtp-starttls", "smtp", "starttls", "postfix", "smtp_port", None),
    ("submission-starttls-plain", "smtp", "starttls", "postfix", "submission_port", "plain"),
    ("submission-starttls-login", "smtp", "starttls", "postfix", "submission_port", "login"),
    ("smtps-implicit", "smtp", "implicit", "postfix", "smtps_port", "auto"),
    ("imap-plain-login", "imap", "none", "dovecot", "imap_port", "auto"),
    ("imap-starttls-login", "imap", "starttls", "dovecot", "imap_port", "login"),
    ("imap-starttls-authenticate", "imap", "starttls", "dovecot", "imap_port", "plain"),
    ("imaps-implicit", "imap", "implicit", "dovecot", "imaps_port", "auto"),
    ("pop3-plain-user", "pop3", "none", "dovecot", "pop3_port", "auto"),
    ("pop3-stls-user", "pop3", "starttls", "dovecot", "pop3_port", "auto"),
    ("pop3-stls-auth-plain", "pop3", "starttls", "dovecot", "pop3_port", "plain"),
    ("pop3s-implicit", "pop3", "implicit", "dovecot", "pop3s_port", "auto"),
]


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch, dovecot: Dovecot) -> str:
    monkeypatch.setenv(PASSWORD_VARIABLE, dovecot.password)
    return dovecot.password


def make_module(
    pki: PKI, protocol: str, tls: str, mechanism: str | None, user: str, **extra: Any
) -> ModuleConfig:
    settings: dict[str, Any] = {
        "protocol": protocol,
        "tls": tls,
        "timeout": "10s",
        "tls_config": {"ca_file": str(pki.ca_file)},
        **extra,
    }
    if mechanism is not None:
        settings["allow_plaintext_auth"] = tls == "none"  # the plaintext cases, on purpose
        settings["auth"] = {
            "username": user,
            "password_env": PASSWORD_VARIABLE,
            "mechanism": mechanism,
        }
    return ModuleConfig.model_validate(settings)


async def probe(host: str, port: int, module: ModuleConfig) -> ProbeResult:
    return await run_probe(parse_address(f"{host}:{port}"), module, module.timeout_seconds)


@pytest.mark.parametrize(
    ("protocol", "tls", "server", "port", "mechanism"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_every_mode_succeeds(
    postfix: Postfix,
    dovecot: Dovecot,
    pki: PKI,
    password: str,
    protocol: str,
    tls: str,
    server: str,
    port: str,
    mechanism: str | None,
) -> None:
    instance = postfix if server == "postfix" else dovecot
    module = make_module(pki, protocol, tls, mechanism, dovecot.user)
    result = await probe("localhost", getattr(instance, port), module)
    assert result.success, "\n".join(result.log)
    assert result.failure is None
    expected_phases = {Phase.CONNECT, Phase.BANNER, Phase.CAPABILITIES, Phase.QUIT}
    if tls != "none":
        expected_phases.add(Phase.TLS_HANDSHAKE)
    if tls == "starttls":
        expected_phases.add(Phase.STARTTLS)
    if mechanism is not None:
        expected_phases.add(Phase.AUTH)
    assert expected_phases <= set(result.phases)
    assert all(seconds >= 0 for seconds in result.phases.values())
    if tls == "implicit":
        assert result.starttls_offered is None  # nothing was said in plaintext
    else:
        assert result.starttls_offered is True
    if tls == "none":
        assert result.tls is None
    else:
        facts = result.tls
        assert facts is not None
        assert facts.verified is True, facts.verify_error
        assert facts.version in ("TLSv1.2", "TLSv1.3")
        assert facts.leaf_not_before == pki.server_not_before.timestamp()
        assert facts.leaf_not_after == pki.server_not_after.timestamp()
        assert facts.earliest_not_after == pki.server_not_after.timestamp()
        assert "mail_exporter tests" in facts.leaf_subject


async def test_plaintext_login_advertised(postfix: Postfix, dovecot: Dovecot, pki: PKI) -> None:
    """Dovecot here allows plaintext login; Postfix's submission port hides AUTH before TLS."""
    imap = await probe("localhost", dovecot.imap_port, make_module(pki, "imap", "none", None, ""))
    assert imap.plaintext_auth_offered is True
    submission = await probe(
        "localhost", postfix.submission_port, make_module(pki, "smtp", "starttls", None, "")
    )
    assert submission.success, submission.log
    assert submission.plaintext_auth_offered is False


def spoken(log: list[str], side: str) -> list[str]:
    """The lines one side (``C`` or ``S``) said, from a probe's session log."""
    marker = f" {side}: "
    return [line.split(marker, 1)[1] for line in log if marker in line]


@pytest.mark.parametrize(
    ("protocol", "tls", "server", "port", "goodbye", "answer"),
    [
        ("smtp", "starttls", "postfix", "submission_port", "QUIT", "221 "),
        ("imap", "implicit", "dovecot", "imaps_port", "a3 LOGOUT", "a3 OK "),
        ("pop3", "implicit", "dovecot", "pop3s_port", "QUIT", "+OK "),
    ],
)
async def test_wrong_password_fails_with_auth_and_says_goodbye(
    postfix: Postfix,
    dovecot: Dovecot,
    pki: PKI,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    tls: str,
    server: str,
    port: str,
    goodbye: str,
    answer: str,
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, "not-the-password")
    instance = postfix if server == "postfix" else dovecot
    module = make_module(pki, protocol, tls, "auto", dovecot.user)
    result = await probe("localhost", getattr(instance, port), module)
    assert not result.success
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.AUTH, FailureReason.AUTH)
    assert "not-the-password" not in "\n".join(result.log)
    assert spoken(result.log, "C")[-1] == goodbye
    assert spoken(result.log, "S")[-1].startswith(answer)  # the server saw a clean end


async def test_ipv6_loopback(postfix: Postfix, dovecot: Dovecot, pki: PKI, password: str) -> None:
    smtp = await probe("[::1]", postfix.smtp_port, make_module(pki, "smtp", "starttls", None, ""))
    assert smtp.success, smtp.log
    assert smtp.peer_address == "::1"
    assert smtp.tls is not None and smtp.tls.verified  # the certificate names ::1


def fake_resolver(monkeypatch: pytest.MonkeyPatch, families: tuple[int, ...]) -> None:
    """Make every name resolve to the loopback address of each of ``families``.

    /etc/hosts here names no IPv6 address, so dual-stack resolution is simulated.
    """
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        answers = {socket.AF_INET: ("127.0.0.1", port), socket.AF_INET6: ("::1", port, 0, 0)}
        return [(family, socket.SOCK_STREAM, 6, "", answers[family]) for family in families]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    ("families", "preferred", "fallback", "expected"),
    [
        ((socket.AF_INET, socket.AF_INET6), "ip4", True, "127.0.0.1"),
        ((socket.AF_INET, socket.AF_INET6), "ip6", True, "::1"),
        ((socket.AF_INET,), "ip6", True, "127.0.0.1"),
        ((socket.AF_INET,), "ip6", False, None),
    ],
)
async def test_preferred_address_family(
    monkeypatch: pytest.MonkeyPatch,
    dovecot: Dovecot,
    pki: PKI,
    password: str,
    families: tuple[int, ...],
    preferred: str,
    fallback: bool,
    expected: str | None,
) -> None:
    fake_resolver(monkeypatch, families)
    module = make_module(
        pki,
        "imap",
        "implicit",
        "auto",
        dovecot.user,
        preferred_ip_protocol=preferred,
        ip_protocol_fallback=fallback,
        tls_config={"ca_file": str(pki.ca_file), "server_name": "localhost"},
    )
    result = await probe("mail.dual-stack.test", dovecot.imaps_port, module)
    if expected is None:
        assert result.failure is not None
        assert (result.failure.phase, result.failure.reason) == (
            Phase.RESOLVE,
            FailureReason.RESOLVE,
        )
        assert "no ip6 address" in result.failure.detail
    else:
        assert result.success, result.log
        assert result.peer_address == expected


async def test_wrong_server_name_is_reported_unverified(postfix: Postfix, pki: PKI) -> None:
    module = make_module(
        pki,
        "smtp",
        "starttls",
        None,
        "",
        tls_config={"ca_file": str(pki.ca_file), "server_name": "mx.elsewhere.example"},
    )
    result = await probe("localhost", postfix.smtp_port, module)
    assert result.failure is not None and result.failure.reason == FailureReason.TLS
    assert result.tls is not None and result.tls.verified is False
    assert result.tls.earliest_not_after == pki.server_not_after.timestamp()


async def test_stopped_server_fails_with_connect(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot
) -> None:
    server = new_postfix(tmp_path_factory, pki, dovecot)
    server.start()
    module = make_module(pki, "smtp", "starttls", None, "")
    try:
        assert (await probe("127.0.0.1", server.smtp_port, module)).success
    finally:
        server.stop()
    result = await probe("127.0.0.1", server.smtp_port, module)
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.CONNECT, FailureReason.CONNECT)
