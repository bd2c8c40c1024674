"""MTA-STS as a sender judges an MX (RFC 8461 §4.1), against real Postfix servers.

dnsmasq serves the domains: each publishes an MTA-STS record and an MX on 127.0.0.1; the
policies come from a loopback HTTPS server with the tests' CA. Three Postfix servers
show three certificates after STARTTLS: ``named`` one from the tests' CA naming
``mx.sts.test`` and ``*.wild.test``, ``session`` the rig's usual one from the same CA
naming neither (localhost, mail.test.local), ``stranger`` one naming both from a CA
nobody trusts. Each case reads the certificate of one server (``mta_sts_port``), as the
DANE tests do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from mail_exporter.collectors.dns.checks import Results, run_checks
from mail_exporter.collectors.dns.collector import DnsCollector
from mail_exporter.collectors.dns.config import DnsConfig, DnsResolverConfig
from tests.conftest import new_postfix
from tests.realservers.dns import INSTALL_HINT, Dnsmasq, Zones
from tests.realservers.dovecot import Dovecot
from tests.realservers.loopback_http import LoopbackHTTP
from tests.realservers.pki import PKI, create_pki, with_server_names
from tests.realservers.postfix import Postfix

pytestmark = pytest.mark.integration

# domain: (its MX hosts, the policy's mode and mx patterns)
DOMAINS: dict[str, tuple[list[str], str, list[str]]] = {
    "sts.test": (["mx.sts.test"], "enforce", ["mx.sts.test"]),
    "wild.test": (["mx.wild.test"], "enforce", ["*.wild.test"]),
    # *.wild.test in the certificate stands for one label only (RFC 6125 §6.4.3)
    "deep.test": (["deep.mx.wild.test"], "enforce", ["deep.mx.wild.test"]),
    "trial.test": (["mx.sts.test"], "testing", ["mx.sts.test"]),
    "off.test": (["mx.sts.test"], "none", ["mx.sts.test"]),
    # backup.sts.test is not in the policy: senders refuse it, and it gets no handshake
    "partial.test": (["mx.sts.test", "backup.sts.test"], "enforce", ["mx.sts.test"]),
    # mx.half.test: 127.0.0.1 answers, 127.0.0.3 refuses (Postfix listens on 127.0.0.1)
    "half.test": (["mx.half.test"], "enforce", ["*.half.test"]),
}
NAMES = ("mx.sts.test", "*.wild.test", "mx.half.test")


def _zones() -> Zones:
    zones = Zones().local("test")
    for domain, (hosts, _, _) in DOMAINS.items():
        zones.txt(f"_mta-sts.{domain}", "v=STSv1; id=1")
        for preference, host in enumerate(hosts, start=10):
            zones.mx(domain, host, preference)
    for host in ("mx.sts.test", "backup.sts.test", "mx.wild.test", "deep.mx.wild.test"):
        zones.host(host, "127.0.0.1")
    zones.a("mx.half.test", "127.0.0.1", "127.0.0.3")
    return zones


def _policy(mode: str, patterns: list[str]) -> str:
    mx = "".join(f"mx: {pattern}\n" for pattern in patterns)
    return f"version: STSv1\nmode: {mode}\n{mx}max_age: 86400\n"


@dataclasses.dataclass(frozen=True)
class Rig:
    dns: Dnsmasq
    https_port: int
    ca_file: Path
    servers: dict[str, Postfix]

    def policy_url(self, domain: str) -> str:
        return f"https://localhost:{self.https_port}/{domain}/.well-known/mta-sts.txt"

    def settings(self, server: str, domains: list[str], **overrides: object) -> DnsConfig:
        values: dict[str, object] = {
            "enabled": True,
            "domains": domains,
            "ip_blocklists": [],
            "domain_blocklists": [],
            "resolver": DnsResolverConfig(
                nameservers=["127.0.0.1"], port=self.dns.port, timeout="2s"
            ),
            "mta_sts_ca_file": self.ca_file,
            "mta_sts_port": self.servers[server].smtp_port,
            "dane": False,
        }
        values.update(overrides)
        return DnsConfig.model_validate(values)

    def run(self, server: str, *domains: str) -> Results:
        return asyncio.run(run_checks(self.settings(server, list(domains)), self.policy_url))


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot, postfix: Postfix
) -> Iterator[Rig]:
    if not Dnsmasq.installed():
        pytest.fail(f"dnsmasq is not installed: {INSTALL_HINT}", pytrace=False)
    named = with_server_names(pki, tmp_path_factory.mktemp("named"), NAMES)
    stranger_ca = create_pki(tmp_path_factory.mktemp("stranger"))
    stranger = with_server_names(stranger_ca, tmp_path_factory.mktemp("stranger_leaf"), NAMES)
    servers = {
        "named": new_postfix(tmp_path_factory, named, dovecot, name="named"),
        "stranger": new_postfix(tmp_path_factory, stranger, dovecot, name="stranger"),
    }
    dns = Dnsmasq(tmp_path_factory.mktemp("dnsmasq"), _zones())
    https = LoopbackHTTP("MTA-STS policy server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)

    async def policy(request: web.Request) -> web.Response:
        _, mode, patterns = DOMAINS[request.match_info["domain"]]
        return web.Response(text=_policy(mode, patterns))

    async def application() -> web.Application:
        app = web.Application()
        app.router.add_get("/{domain}/.well-known/mta-sts.txt", policy)
        return app

    try:
        for server in servers.values():
            server.start()
        dns.start()
        https.start(application, context)
        yield Rig(dns, https.port, pki.ca_file, {"session": postfix, **servers})
    finally:
        https.stop()
        dns.stop()
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize(
    ("server", "domain", "mx", "valid"),
    [
        pytest.param("named", "sts.test", "mx.sts.test", True, id="trusted CA, MX named"),
        pytest.param("named", "wild.test", "mx.wild.test", True, id="wildcard for the MX"),
        pytest.param("named", "deep.test", "deep.mx.wild.test", False,
                     id="wildcard one label too high"),
        pytest.param("session", "sts.test", "mx.sts.test", False, id="MX not named"),
        pytest.param("stranger", "sts.test", "mx.sts.test", False, id="untrusted CA"),
        pytest.param("session", "trial.test", "mx.sts.test", False, id="testing mode judged too"),
    ],
)  # fmt: skip
def test_the_certificate_of_a_covered_mx(
    rig: Rig, server: str, domain: str, mx: str, valid: bool
) -> None:
    results = rig.run(server, domain)
    sts = results.mta_sts[domain]
    assert sts.mx_hosts_covered == {mx: True}
    assert sts.mx_certificates_valid == {mx: valid}
    assert results.check_errors() == []


def test_mode_none_judges_no_certificate(rig: Rig) -> None:
    sts = rig.run("session", "off.test").mta_sts["off.test"]
    assert sts.mx_hosts_covered == {"mx.sts.test": True}
    assert sts.mx_certificates_valid == {}


def test_an_mx_the_policy_does_not_list(rig: Rig) -> None:
    sts = rig.run("named", "partial.test").mta_sts["partial.test"]
    assert sts.mx_covered is False
    assert sts.mx_hosts_covered == {"mx.sts.test": True, "backup.sts.test": False}
    assert sts.mx_certificates_valid == {"mx.sts.test": True}


def test_an_address_without_a_handshake_is_an_error_not_a_verdict(rig: Rig) -> None:
    results = rig.run("named", "half.test")
    assert results.mta_sts["half.test"].mx_certificates_valid == {"mx.half.test": True}
    assert results.check_errors() == [("mta_sts_smtp", "connect")]


def test_an_mx_that_does_not_answer_has_no_verdict(rig: Rig, postfix: Postfix) -> None:
    settings = rig.settings("session", ["sts.test"], mta_sts_port=postfix.refused_port)
    results = asyncio.run(run_checks(settings, rig.policy_url))
    assert results.mta_sts["sts.test"].mx_certificates_valid == {}
    assert results.check_errors() == [("mta_sts_smtp", "connect")]


def _at_once(run: Callable[[], None]) -> None:
    run()


def test_exposition(rig: Rig) -> None:
    settings = rig.settings("named", ["partial.test", "deep.test"])
    registry = CollectorRegistry()
    registry.register(DnsCollector(settings, background=_at_once, mta_sts_url=rig.policy_url))
    lines = generate_latest(registry).decode().splitlines()
    for line in (
        'mail_dns_mta_sts_mx_host_covered{domain="partial.test",mx="mx.sts.test"} 1.0',
        'mail_dns_mta_sts_mx_host_covered{domain="partial.test",mx="backup.sts.test"} 0.0',
        'mail_dns_mta_sts_mx_certificate_valid{domain="partial.test",mx="mx.sts.test"} 1.0',
        'mail_dns_mta_sts_mx_certificate_valid{domain="deep.test",mx="deep.mx.wild.test"} 0.0',
    ):
        assert line in lines, line
    judged = [line for line in lines if line.startswith("mail_dns_mta_sts_mx_certificate_valid{")]
    assert len(judged) == 2  # not the MX the policy does not list
