"""The DNS checks against a real DNS server: dnsmasq from Debian, on a loopback port.

The zones (see :func:`zones`) hold a good domain and one domain per kind of broken
record (two SPF records, SPF over 10 lookups through a chain of includes, SPF over 2
void lookups, DMARC missing, DKIM key missing, an MTA-STS policy that does not cover
the MX), sending IPs with a right, a mismatched and a missing PTR, TLSA records that
match and do not match the real Postfix of the test rig, a blocklist answering listed
(127.0.0.2), unlisted (NXDOMAIN) and refused (127.255.255.254), and a zone that never
answers. MTA-STS policies come from a loopback HTTPS server with the tests' CA.

What a real server without DNSSEC cannot produce (the AD bit) or will not produce on
purpose (SERVFAIL) stays with the scripted server, in test_dns_checks.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from prometheus_client import CollectorRegistry, generate_latest

from mail_exporter.collectors.dns import dnsbl
from mail_exporter.collectors.dns.checks import Results, run_checks
from mail_exporter.collectors.dns.collector import DnsCollector
from mail_exporter.collectors.dns.config import DnsConfig, DnsResolverConfig
from tests.realservers.dns import INSTALL_HINT, Dnsmasq, Zones
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix

pytestmark = pytest.mark.integration

IPV6 = "2001:db8::25"
IPV6_NIBBLES = "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
SPF_CHAIN = 11  # includes in a row: one over RFC 7208's limit of 10 lookups


def _dkim_key(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _spki_sha256(pem: Path) -> str:
    certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _domain(zones: Zones, domain: str, *, spf: list[str] | None = None, dmarc: bool = True,
            dkim: str | None = None, mta_sts: bool = False) -> None:  # fmt: skip
    """A domain with an MX on 127.0.0.1 and, unless told otherwise, every record right."""
    zones.mx(domain, f"mx.{domain}").host(f"mx.{domain}", "127.0.0.1")
    zones.txt(domain, *(spf if spf is not None else ["v=spf1 ip4:192.0.2.0/24 -all"]))
    if dmarc:
        zones.txt(f"_dmarc.{domain}", f"v=DMARC1; p=reject; pct=50; rua=mailto:d@{domain}")
    if dkim:
        zones.txt(f"mail._domainkey.{domain}", f"v=DKIM1; k=rsa; p={dkim}")
    if mta_sts:
        zones.txt(f"_mta-sts.{domain}", "v=STSv1; id=20240101")
    zones.txt(f"_smtp._tls.{domain}", f"v=TLSRPTv1; rua=mailto:tls@{domain}")


def zones(pki: PKI) -> Zones:
    key = _dkim_key(2048)
    z = Zones().local("test", "2.0.192.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")
    # good.test: everything right, its SPF includes another record
    _domain(z, "good.test", dkim=key, mta_sts=True,
            spf=["v=spf1 ip4:192.0.2.0/24 include:_spf.good.test -all",
                 "google-site-verification=abc"])  # fmt: skip
    z.txt("_spf.good.test", "v=spf1 a mx ip6:2001:db8::/32 ~all")
    z.tlsa("_25._tcp.mx.good.test", 3, 1, 1, _spki_sha256(pki.server_cert))
    # one domain per broken record
    _domain(z, "twospf.test", dkim=key, spf=["v=spf1 -all", "v=spf1 mx -all"])
    _domain(z, "manyspf.test", dkim=key, spf=["v=spf1 include:s1.manyspf.test -all"])
    for n in range(1, SPF_CHAIN):
        z.txt(f"s{n}.manyspf.test", f"v=spf1 include:s{n + 1}.manyspf.test -all")
    z.txt(f"s{SPF_CHAIN}.manyspf.test", "v=spf1 ip4:192.0.2.1 -all")
    # a: the domain has no address (NODATA); mx: its MX resolves; gone: NXDOMAIN twice
    _domain(z, "voidspf.test", dkim=key,
            spf=["v=spf1 a mx a:gone.voidspf.test mx:gone.voidspf.test -all"])  # fmt: skip
    _domain(z, "nodmarc.test", dkim=key, dmarc=False)
    _domain(z, "nodkim.test")
    _domain(z, "stsmismatch.test", dkim=key, mta_sts=True)
    _domain(z, "tlsawrong.test", dkim=key)
    z.tlsa("_25._tcp.mx.tlsawrong.test", 3, 1, 1, _spki_sha256(pki.wronghost_cert))
    # reverse DNS: .25 right (and its IPv6), .26 a PTR whose name points elsewhere, .27 none
    z.host("mail.good.test", "192.0.2.25", IPV6)
    z.ptr("26.2.0.192.in-addr.arpa", "wrong.good.test").host("wrong.good.test", "192.0.2.99")
    # blocklists: .25 listed, .26 refused, .27 not listed (NXDOMAIN), IPv6 listed
    z.a("25.2.0.192.bl.test", "127.0.0.2")
    z.a("26.2.0.192.bl.test", "127.255.255.254")
    z.a(f"{IPV6_NIBBLES}.bl.test", "127.0.0.4")
    z.a("twospf.test.dbl.test", "127.0.1.2")
    # a blocklist zone that never answers: dnsmasq forwards it to a socket that is silent
    z.silent("slowbl.test")
    return z


POLICIES = {
    "good.test": "version: STSv1\nmode: enforce\nmx: *.good.test\nmax_age: 604800\n",
    "stsmismatch.test": "version: STSv1\nmode: testing\nmx: mx.other.test\nmax_age: 86400\n",
}


@dataclass
class Rig:
    dns: Dnsmasq
    https_port: int
    ca_file: Path
    smtp_port: int  # the real Postfix, for the MTA-STS check of good.test's MX

    def policy_url(self, domain: str) -> str:
        return f"https://localhost:{self.https_port}/{domain}/.well-known/mta-sts.txt"

    def settings(self, **overrides: object) -> DnsConfig:
        values: dict[str, object] = {
            "enabled": True,
            "domains": ["good.test", "twospf.test", "manyspf.test", "voidspf.test",
                        "nodmarc.test", "nodkim.test", "stsmismatch.test"],
            "sending_ips": ["192.0.2.25", "192.0.2.26", "192.0.2.27", IPV6],
            "helo_name": "mail.good.test",
            "dkim_selectors": ["mail"],
            "ip_blocklists": ["bl.test"],
            "domain_blocklists": ["dbl.test"],
            "resolver": DnsResolverConfig(
                nameservers=["127.0.0.1"], port=self.dns.port, timeout="1s"
            ),
            "mta_sts_ca_file": self.ca_file,
            "mta_sts_port": self.smtp_port,
            "dane": False,  # DANE needs the real Postfix: test_dane_against_postfix
        }  # fmt: skip
        values.update(overrides)
        return DnsConfig.model_validate(values)

    def run(self, settings: DnsConfig) -> Results:
        return asyncio.run(run_checks(settings, self.policy_url))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, pki: PKI, postfix: Postfix) -> Iterator[Rig]:
    if not Dnsmasq.installed():
        pytest.fail(
            f"dnsmasq is not installed, so the real DNS server tests cannot run: {INSTALL_HINT}",
            pytrace=False,
        )
    server = Dnsmasq(tmp_path_factory.mktemp("dnsmasq"), zones(pki))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def policy(request: web.Request) -> web.Response:
        text = POLICIES.get(request.match_info["domain"])
        return web.Response(text=text) if text else web.Response(status=404)

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/{domain}/.well-known/mta-sts.txt", policy)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        return runner, runner.addresses[0][1]

    runner, https_port = asyncio.run_coroutine_threadsafe(start(), loop).result()
    try:
        server.start()
        yield Rig(server, https_port, pki.ca_file, postfix.smtp_port)
    finally:
        server.stop()
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


@pytest.fixture(scope="module")
def results(rig: Rig) -> Results:
    return rig.run(rig.settings())


# --- domain records -----------------------------------------------------------------


def test_good_records(results: Results) -> None:
    good = results.domains["good.test"]
    assert good.mx_hosts == ["mx.good.test"]
    assert good.mx_resolvable == {"mx.good.test": True}
    assert good.mx_addresses == {"mx.good.test": ["127.0.0.1"]}
    assert (good.spf_records, good.spf_valid, good.spf_lookups) == (1, True, 3)
    assert good.spf_void_lookups == 2  # _spf.good.test's a and mx: no records, at the limit
    assert (good.dmarc_present, good.dmarc_policy, good.dmarc_ratio) == (True, "reject", 0.5)
    assert (good.dkim_present, good.dkim_bits) == ({"mail": True}, {"mail": 2048})
    assert good.tls_rpt_present is True
    assert good.mx_authenticated is False  # dnsmasq here does not validate: no AD bit
    assert good.errors == []
    sts = results.mta_sts["good.test"]
    assert sts.record_present and sts.policy_valid and sts.mx_covered
    assert sts.policy is not None and (sts.policy.mode, sts.policy.max_age) == ("enforce", 604800)
    assert results.check_errors() == []


def test_expected_mx_hosts(rig: Rig) -> None:
    results = rig.run(
        rig.settings(domains=["good.test", "twospf.test"], sending_ips=[], ip_blocklists=[],
                     domain_blocklists=[], mx_hosts=["mx.good.test"])
    )  # fmt: skip
    assert results.domains["good.test"].mx_expected == {"mx.good.test": True}
    assert results.domains["good.test"].mx_unexpected == 0
    assert results.domains["twospf.test"].mx_expected == {"mx.good.test": False}
    assert results.domains["twospf.test"].mx_unexpected == 1


def test_two_spf_records(results: Results) -> None:
    two = results.domains["twospf.test"]
    assert (two.spf_records, two.spf_valid) == (2, False)
    assert two.dmarc_present is True and two.dkim_present == {"mail": True}


def test_spf_over_ten_lookups_through_a_chain_of_includes(rig: Rig, results: Results) -> None:
    many = results.domains["manyspf.test"]
    assert (many.spf_records, many.spf_valid, many.spf_lookups) == (1, False, 11)
    asked = {name for name, rdtype in rig.dns.queries() if rdtype == "TXT"}
    assert {f"s{n}.manyspf.test" for n in range(1, SPF_CHAIN)} <= asked
    assert f"s{SPF_CHAIN}.manyspf.test" not in asked  # counting stops past the limit


def test_spf_over_two_void_lookups(rig: Rig, results: Results) -> None:
    void = results.domains["voidspf.test"]
    assert (void.spf_valid, void.spf_lookups, void.spf_void_lookups) == (False, 4, 3)
    assert void.errors == []
    asked = set(rig.dns.queries())
    assert ("voidspf.test", "A") in asked and ("gone.voidspf.test", "MX") in asked


def test_dmarc_missing(results: Results) -> None:
    missing = results.domains["nodmarc.test"]
    assert (missing.dmarc_present, missing.dmarc_policy, missing.dmarc_ratio) == (False, None, None)
    assert missing.spf_valid is True and missing.errors == []


def test_dkim_key_missing(results: Results) -> None:
    missing = results.domains["nodkim.test"]
    assert (missing.dkim_present, missing.dkim_bits) == ({"mail": False}, {})
    assert missing.dmarc_present is True and missing.errors == []


def test_mta_sts_policy_not_covering_the_mx(results: Results) -> None:
    mismatch = results.mta_sts["stsmismatch.test"]
    assert mismatch.record_present and mismatch.policy_valid
    assert mismatch.mx_covered is False
    assert mismatch.policy is not None and mismatch.policy.mode == "testing"
    assert results.mta_sts["nodkim.test"].record_present is False


# --- reverse DNS ---------------------------------------------------------------------


def test_ptr_right_mismatched_and_missing(results: Results) -> None:
    good, wrong, missing, v6 = (
        results.reverse[ip] for ip in ("192.0.2.25", "192.0.2.26", "192.0.2.27", IPV6)
    )
    assert (good.ptr_present, good.forward_confirmed, good.matches_helo) == (True, True, True)
    assert (wrong.ptr_present, wrong.forward_confirmed, wrong.matches_helo) == (True, False, False)
    assert (missing.ptr_present, missing.forward_confirmed) == (False, False)
    assert (v6.ptr_present, v6.forward_confirmed, v6.matches_helo) == (True, True, True)


# --- DANE against the real Postfix ---------------------------------------------------


def test_dane_against_postfix(rig: Rig, postfix: Postfix) -> None:
    results = rig.run(
        rig.settings(domains=["good.test", "tlsawrong.test"], sending_ips=[], mta_sts=False,
                     dane=True, dane_port=postfix.smtp_port)
    )  # fmt: skip
    right, wrong = results.dane["mx.good.test"], results.dane["mx.tlsawrong.test"]
    assert (right.records, right.matches, right.authenticated) == (1, True, False)
    assert (wrong.records, wrong.matches, wrong.authenticated) == (1, False, False)
    assert results.check_errors() == []


# --- blocklists ----------------------------------------------------------------------


def test_blocklist_listed_unlisted_and_refused(rig: Rig, results: Results) -> None:
    listings = results.ip_listings
    assert listings[("bl.test", "192.0.2.25")] == dnsbl.Listing(codes=["127.0.0.2"])
    assert listings[("bl.test", "192.0.2.27")] == dnsbl.Listing()  # NXDOMAIN
    assert listings[("bl.test", "192.0.2.26")] == dnsbl.Listing(error="refused")
    assert listings[("bl.test", IPV6)] == dnsbl.Listing(codes=["127.0.0.4"])
    assert (f"{IPV6_NIBBLES}.bl.test", "A") in rig.dns.queries()
    assert results.blocklist_errors() == [("bl.test", "refused")]


def test_domain_blocklist(results: Results) -> None:
    assert results.domain_listings[("dbl.test", "twospf.test")].codes == ["127.0.1.2"]
    assert results.domain_listings[("dbl.test", "good.test")] == dnsbl.Listing()


def test_a_zone_that_never_answers_is_a_timeout_never_a_listing(rig: Rig) -> None:
    # slowbl.test is configured in dnsmasq as forwarded to a UDP socket that is bound but
    # never read (dnsmasq has no option to drop queries itself): dnsmasq sends no answer
    # at all, as a blocklist that rate-limits by dropping does. Every other name still
    # answers from the same server, so only that zone's checks end without a verdict.
    results = rig.run(
        rig.settings(domains=[], sending_ips=["192.0.2.25", "192.0.2.27"],
                     ip_blocklists=["bl.test", "slowbl.test"])
    )  # fmt: skip
    for ip in ("192.0.2.25", "192.0.2.27"):
        assert results.ip_listings[("slowbl.test", ip)] == dnsbl.Listing(error="timeout")
    assert results.ip_listings[("bl.test", "192.0.2.25")].codes == ["127.0.0.2"]
    assert results.reverse["192.0.2.25"].forward_confirmed is True
    assert sorted(results.blocklist_errors()) == [("slowbl.test", "timeout")] * 2
    assert ("25.2.0.192.slowbl.test", "A") in rig.dns.queries()


# --- the collector's cache -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_second_pass_inside_the_interval_sends_no_queries(rig: Rig) -> None:
    clock = Clock()
    collector = DnsCollector(
        rig.settings(interval="10m"), clock=clock, background=lambda run: run(),
        mta_sts_url=rig.policy_url,
    )  # fmt: skip
    registry = CollectorRegistry()
    registry.register(collector)
    before = rig.dns.settled_query_count()
    first = generate_latest(registry).decode()
    sent = rig.dns.settled_query_count()
    assert sent > before
    assert 'mail_dnsbl_listed{code="127.0.0.2",ip="192.0.2.25",zone="bl.test"} 1.0' in first
    assert 'mail_dns_spf_valid{domain="manyspf.test"} 0.0' in first
    clock.now += 599
    assert generate_latest(registry).decode() == first
    assert rig.dns.settled_query_count() == sent  # served from the cache: nothing sent
    clock.now += 1
    generate_latest(registry)
    assert rig.dns.settled_query_count() > sent  # the interval is over: a new pass
