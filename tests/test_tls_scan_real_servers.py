"""The TLS scan against real Postfix and Dovecot, each configured once to accept TLS 1.0 to 1.3
and weak ciphers and once TLS 1.2 and up without them: every answer the scan reports is the
one ``openssl s_client`` gets with the same offer on the same port."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import run_probe
from mail_exporter.probes.tls_scan import TLSScan
from mail_exporter.probes.tls_scanner import VERSIONS, WEAK_CIPHER_CLASSES
from mail_exporter.targets import parse_address
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.tls_policy import POLICIES, Policy, PolicyDovecot, PolicyPostfix

pytestmark = pytest.mark.integration

S_CLIENT_VERSION_FLAGS = {
    "TLS 1.0": "-tls1",
    "TLS 1.1": "-tls1_1",
    "TLS 1.2": "-tls1_2",
    "TLS 1.3": "-tls1_3",
}
S_CLIENT_TIMEOUT_SECONDS = 20


@pytest.fixture(scope="module", params=POLICIES)
def policy_dovecot(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pki: PKI
) -> Iterator[PolicyDovecot]:
    server = PolicyDovecot(tmp_path_factory.mktemp("dovecot-tls"), pki, request.param)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=POLICIES)
def policy_postfix(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pki: PKI,
    dovecot: Dovecot,
) -> Iterator[PolicyPostfix]:
    server = PolicyPostfix(
        tmp_path_factory.mktemp("postfix-tls"), pki, request.param, dovecot.auth_port,
        dovecot.lmtp_port,
    )  # fmt: skip
    server.start()
    yield server
    server.stop()


def s_client_accepts(port: int, starttls: str | None, *offer: str) -> bool:
    """Whether ``openssl s_client`` with ``offer`` completes a handshake on ``port``."""
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *offer]
    if starttls is not None:
        command += ["-starttls", starttls]
    done = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=S_CLIENT_TIMEOUT_SECONDS,
        check=False,
    )
    established = "CONNECTION ESTABLISHED" in done.stderr
    assert established == (done.returncode == 0), done.stderr
    return established


def s_client_can_offer(cipher_class: str) -> bool:
    """Whether the local OpenSSL has any suite of the class (``openssl ciphers`` finds one)."""
    ciphers = WEAK_CIPHER_CLASSES[cipher_class]
    done = subprocess.run(
        ["openssl", "ciphers", f"{ciphers}:@SECLEVEL=0"], capture_output=True, check=False
    )
    return done.returncode == 0


async def scan(protocol: str, tls: str, port: int, pki: PKI) -> TLSScan:
    module = ModuleConfig.model_validate(
        {
            "protocol": protocol,
            "tls": tls,
            "timeout": "10s",
            "tls_config": {"ca_file": str(pki.ca_file)},
            "tls_scan": True,
        }
    )
    result = await run_probe(parse_address(f"127.0.0.1:{port}"), module, 10.0)
    assert result.success, "\n".join(result.log)
    assert result.tls_scan is not None, "\n".join(result.log)
    assert result.tls_scan.success, "\n".join(result.log)
    return result.tls_scan


def assert_as_s_client_sees(found: TLSScan, port: int, starttls: str | None) -> None:
    """Each version and each weak cipher class: the scan's answer is s_client's."""
    assert set(found.versions) == set(VERSIONS)  # this host's OpenSSL offers all four
    for version, accepted in found.versions.items():
        flags = (S_CLIENT_VERSION_FLAGS[version], "-cipher", "ALL:@SECLEVEL=0")
        assert accepted == s_client_accepts(port, starttls, *flags), version
    for cipher_class in WEAK_CIPHER_CLASSES:
        assert (cipher_class in found.weak_ciphers) == s_client_can_offer(cipher_class)
        if cipher_class not in found.weak_ciphers:  # and the probe's log says why
            assert cipher_class in found.notes[0] and "cannot offer" in found.notes[0]
    for cipher_class, accepted in found.weak_ciphers.items():
        offer = ("-no_tls1_3", "-cipher", f"{WEAK_CIPHER_CLASSES[cipher_class]}:@SECLEVEL=0")
        assert accepted == s_client_accepts(port, starttls, *offer), cipher_class


def assert_policy(found: TLSScan, policy: Policy) -> None:
    """What each configuration is for, so the comparison with s_client is never vacuous."""
    old = found.versions["TLS 1.0"], found.versions["TLS 1.1"]
    assert found.versions["TLS 1.2"] and found.versions["TLS 1.3"]
    assert old == ((True, True) if policy == "legacy" else (False, False))
    assert found.weak_ciphers["rsa_key_exchange"] is (policy == "legacy")
    assert found.weak_ciphers["cbc_sha1"] or policy == "modern"


@pytest.mark.parametrize(
    ("protocol", "tls", "port", "starttls"),
    [("smtp", "starttls", "smtp_port", "smtp"), ("smtp", "implicit", "smtps_port", None)],
    ids=["smtp-starttls", "smtps"],
)
async def test_postfix(
    policy_postfix: PolicyPostfix,
    pki: PKI,
    protocol: str,
    tls: str,
    port: str,
    starttls: str | None,
) -> None:
    number = getattr(policy_postfix, port)
    found = await scan(protocol, tls, number, pki)
    assert_as_s_client_sees(found, number, starttls)
    assert_policy(found, policy_postfix.policy)
    if policy_postfix.policy == "modern":  # smtpd_tls_exclude_ciphers = kRSA, SHA1
        assert found.weak_ciphers["cbc_sha1"] is False


@pytest.mark.parametrize(
    ("protocol", "tls", "port", "starttls"),
    [
        ("imap", "starttls", "imap_port", "imap"),
        ("imap", "implicit", "imaps_port", None),
        ("pop3", "starttls", "pop3_port", "pop3"),
        ("pop3", "implicit", "pop3s_port", None),
    ],
    ids=["imap-starttls", "imaps", "pop3-stls", "pop3s"],
)
async def test_dovecot(
    policy_dovecot: PolicyDovecot,
    pki: PKI,
    protocol: str,
    tls: str,
    port: str,
    starttls: str | None,
) -> None:
    number = getattr(policy_dovecot, port)
    found = await scan(protocol, tls, number, pki)
    assert_as_s_client_sees(found, number, starttls)
    assert_policy(found, policy_dovecot.policy)
