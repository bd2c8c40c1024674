"""The DNS checks against a local DNS server: each kind of good and broken record.

The zone (see :func:`mail_zone`) has a good domain, a domain with every record broken,
a domain whose SPF costs too many lookups, sending IPs with good, wrong and missing
PTRs, a blocklist with listed, unlisted and refused answers, and names that never
answer. MTA-STS policies come from a loopback HTTPS server with the tests' CA, DANE
is checked against a loopback STARTTLS server with the tests' certificate.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from mail_exporter.collectors.base import COLLECTORS, CollectorError
from mail_exporter.collectors.dns import checks as checks_module
from mail_exporter.collectors.dns import collector as collector_module
from mail_exporter.collectors.dns import dnsbl
from mail_exporter.collectors.dns.checks import Results, run_checks
from mail_exporter.collectors.dns.collector import DnsCollector
from mail_exporter.collectors.dns.config import DnsConfig, DnsResolverConfig
from mail_exporter.collectors.dns.dane import Dane, Tlsa, tlsa_matches, usable
from mail_exporter.collectors.dns.records import DomainRecords
from mail_exporter.collectors.dns.starttls import addresses_to_check
from mail_exporter.config.root import Config
from mail_exporter.exposition import registry_parts
from mail_exporter.gzip_body import compress, gzip_member
from tests.dnsserver import DnsServer, Zone, txt
from tests.promtool import check_metrics
from tests.realservers.pki import create_pki
from tests.realservers.runtime import free_port, start_with_fresh_ports

IPV6 = "2001:db8::25"
IPV6_NIBBLES = "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"


def _dkim_key(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def mail_zone(tlsa_good: str) -> Zone:
    includes = " ".join(f"include:i{n}.many.test" for n in range(11))
    records: dict[tuple[str, str], list[str]] = {
        # good.test: everything right
        ("good.test", "MX"): ["10 mx.good.test."],
        ("mx.good.test", "A"): ["127.0.0.1"],
        ("good.test", "TXT"): [
            txt("v=spf1 ip4:192.0.2.0/24 include:_spf.good.test -all"),
            txt("google-site-verification=abc"),
        ],
        ("_spf.good.test", "TXT"): [txt("v=spf1 a mx ip6:2001:db8::/32 ~all")],
        ("_dmarc.good.test", "TXT"): [txt("v=DMARC1; p=reject; pct=50; rua=mailto:d@good.test")],
        ("mail._domainkey.good.test", "TXT"): [txt(f"v=DKIM1; k=rsa; p={_dkim_key(2048)}")],
        ("_mta-sts.good.test", "TXT"): [txt("v=STSv1; id=20240101")],
        ("_smtp._tls.good.test", "TXT"): [txt("v=TLSRPTv1; rua=mailto:tls@good.test")],
        ("_25._tcp.mx.good.test", "TLSA"): [f"3 1 1 {tlsa_good}"],
        # bad.test: every record broken
        ("bad.test", "MX"): ["10 mx.bad.test.", "20 gone.bad.test."],
        ("mx.bad.test", "A"): ["127.0.0.1"],
        ("bad.test", "TXT"): [txt("v=spf1 -all"), txt("v=spf1 mx -all")],
        ("_dmarc.bad.test", "TXT"): [txt("some other text")],
        ("old._domainkey.bad.test", "TXT"): [txt("v=DKIM1; p=")],  # revoked
        ("_mta-sts.bad.test", "TXT"): [txt("v=STSv1; id=1")],
        ("_25._tcp.mx.bad.test", "TLSA"): ["3 1 1 " + "00" * 32],
        # MX hosts with several addresses: 127.0.0.2 shows another certificate, nothing
        # listens on 127.0.0.3-7, ::1 shows the right one
        **{(f"{d}.test", "MX"): [f"10 mx.{d}.test."] for d in ("multi", "split", "half", "wide")},
        **{
            (f"_25._tcp.mx.{d}.test", "TLSA"): [f"3 1 1 {tlsa_good}"]
            for d in ("multi", "split", "half", "wide")
        },  # fmt: skip
        ("mx.multi.test", "A"): ["127.0.0.1"],
        ("mx.multi.test", "AAAA"): ["::1"],
        ("mx.split.test", "A"): ["127.0.0.1", "127.0.0.2"],
        ("mx.half.test", "A"): ["127.0.0.1", "127.0.0.3"],
        ("mx.wide.test", "A"): [f"127.0.0.{n}" for n in (7, 6, 5, 4, 1)],
        ("mx.wide.test", "AAAA"): ["::1"],
        # mx.other.test: an MX host no domain names, with a TLSA record that matches
        ("mx.other.test", "A"): ["127.0.0.1"],
        ("_25._tcp.mx.other.test", "TLSA"): [f"3 1 1 {tlsa_good}"],
        # pkix.test: TLSA records of the usages RFC 7672 leaves unusable for SMTP only
        ("pkix.test", "MX"): ["10 mx.pkix.test."],
        ("mx.pkix.test", "A"): ["127.0.0.1"],
        ("_25._tcp.mx.pkix.test", "TLSA"): [f"1 1 1 {tlsa_good}", "0 0 1 " + "00" * 32],
        # many.test: SPF over the limit of 10 lookups; syntax.test: SPF that does not parse
        ("many.test", "TXT"): [txt(f"v=spf1 {includes} -all")],
        **{(f"i{n}.many.test", "TXT"): [txt("v=spf1 -all")] for n in range(11)},
        ("syntax.test", "TXT"): [txt("v=spf1 foo:bar -all")],
        ("_dmarc.syntax.test", "TXT"): [txt("v=DMARC1; p=sometimes")],
        # reverse DNS: .25 right, .26 PTR not confirmed, .27 without a PTR
        ("25.2.0.192.in-addr.arpa", "PTR"): ["mail.good.test."],
        ("mail.good.test", "A"): ["192.0.2.25"],
        ("mail.good.test", "AAAA"): [IPV6],
        ("26.2.0.192.in-addr.arpa", "PTR"): ["wrong.good.test."],
        ("wrong.good.test", "A"): ["192.0.2.99"],
        (f"{IPV6_NIBBLES}.ip6.arpa", "PTR"): ["mail.good.test."],
        # blocklists
        ("25.2.0.192.bl.test", "A"): ["127.0.0.2", "127.0.0.11"],
        ("25.2.0.192.bl.test", "TXT"): [txt("listed, see https://bl.test/")],
        ("26.2.0.192.bl.test", "A"): ["127.255.255.254"],
        ("28.2.0.192.bl.test", "A"): ["192.0.2.1"],  # a resolver rewriting NXDOMAIN
        (f"{IPV6_NIBBLES}.bl.test", "A"): ["127.0.0.4"],
        ("bad.test.dbl.test", "A"): ["127.0.1.2"],
    }
    return Zone(
        records,
        silent={"slow.test", "slowbl.test"},
        servfail={"fail.test"},
        signed={"good.test", "_25._tcp.mx.good.test"},
    )


POLICIES = {
    "good.test": "version: STSv1\nmode: enforce\nmx: *.good.test\nmax_age: 604800\n",
    "bad.test": "version: STSv1\nmode: testing\nmx: mx.other.test\nmax_age: 86400\n",
}


@dataclass
class Rig:
    zone: Zone
    dns_port: int
    https_port: int
    smtp_port: int
    ca_file: Path
    connections: Counter[str]  # by the address of the STARTTLS server that accepted them

    def policy_url(self, domain: str) -> str:
        return f"https://localhost:{self.https_port}/{domain}/.well-known/mta-sts.txt"

    def settings(self, **overrides: object) -> DnsConfig:
        values: dict[str, object] = {
            "enabled": True,
            "domains": ["good.test", "bad.test"],
            "sending_ips": ["192.0.2.25", "192.0.2.26", "192.0.2.27", IPV6],
            "helo_name": "mail.good.test",
            "dkim_selectors": ["mail"],
            "ip_blocklists": ["bl.test"],
            "domain_blocklists": ["dbl.test"],
            "resolver": DnsResolverConfig(
                nameservers=["127.0.0.1"], port=self.dns_port, timeout="1s"
            ),
            "mta_sts_ca_file": self.ca_file,
            "dane_port": self.smtp_port,
            "mta_sts_port": self.smtp_port,
        }
        values.update(overrides)
        return DnsConfig.model_validate(values)

    def run(self, settings: DnsConfig) -> Results:
        return asyncio.run(run_checks(settings, self.policy_url))


async def _smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                context: ssl.SSLContext, connections: Counter[str]) -> None:  # fmt: skip
    connections[writer.get_extra_info("sockname")[0]] += 1
    writer.write(b"220 localhost ESMTP\r\n")
    while line := await reader.readline():
        command = line.strip().upper()
        if command.startswith(b"EHLO"):
            writer.write(b"250-localhost\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        elif command == b"STARTTLS":
            writer.write(b"220 go ahead\r\n")
            await writer.drain()
            await writer.start_tls(context)
        elif command == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        await writer.drain()
    writer.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    pki = create_pki(tmp_path_factory.mktemp("pki"))
    certificate = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    zone = mail_zone(hashlib.sha256(spki).hexdigest())
    server = DnsServer(zone)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    wronghost = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    wronghost.load_cert_chain(pki.wronghost_cert, pki.wronghost_key)
    connections: Counter[str] = Counter()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def policy(request: web.Request) -> web.Response:
        text = POLICIES.get(request.match_info["domain"])
        return web.Response(text=text) if text else web.Response(status=404)

    async def start() -> tuple[web.AppRunner, list[asyncio.Server], int, int]:
        app = web.Application()
        app.router.add_get("/{domain}/.well-known/mta-sts.txt", policy)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        smtps: list[asyncio.Server] = []
        try:
            # A free port on 127.0.0.1, then the same number on 127.0.0.2 (with a wrong
            # certificate) and ::1, where it may be taken.
            port = 0
            for address, tls in (
                ("127.0.0.1", context),
                ("127.0.0.2", wronghost),
                ("::1", context),
            ):
                smtps.append(await asyncio.start_server(
                    partial(_smtp, context=tls, connections=connections), address, port
                ))  # fmt: skip
                port = smtps[0].sockets[0].getsockname()[1]
        except OSError:
            for server in smtps:
                server.close()
            await runner.cleanup()
            raise
        return runner, smtps, runner.addresses[0][1], port

    runner, smtps, https_port, smtp_port = start_with_fresh_ports(
        lambda: asyncio.run_coroutine_threadsafe(start(), loop).result()
    )
    yield Rig(zone, server.port, https_port, smtp_port, pki.ca_file, connections)

    async def stop() -> None:
        for smtp in smtps:
            smtp.close()
        await runner.cleanup()

    asyncio.run_coroutine_threadsafe(stop(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    server.close()


@pytest.fixture(scope="module")
def results(rig: Rig) -> Results:
    return rig.run(rig.settings(dkim_selectors=["mail", "old", "missing"]))


# --- domain records -----------------------------------------------------------------


def test_good_domain_records(results: Results) -> None:
    good = results.domains["good.test"]
    assert good.mx_hosts == ["mx.good.test"]
    assert good.mx_resolvable == {"mx.good.test": True}
    assert (good.spf_records, good.spf_valid, good.spf_lookups) == (1, True, 3)
    assert (good.dmarc_present, good.dmarc_policy, good.dmarc_ratio) == (True, "reject", 0.5)
    assert good.dkim_present["mail"] is True
    assert good.dkim_bits == {"mail": 2048}
    assert good.tls_rpt_present is True
    assert good.mx_authenticated is True
    assert good.errors == []


def test_broken_domain_records(results: Results) -> None:
    bad = results.domains["bad.test"]
    assert bad.mx_resolvable == {"gone.bad.test": False, "mx.bad.test": True}
    assert (bad.spf_records, bad.spf_valid) == (2, False)
    assert bad.dmarc_present is False and bad.dmarc_policy is None
    assert bad.dkim_present == {"mail": False, "old": False, "missing": False}
    assert bad.dkim_bits == {}
    assert bad.tls_rpt_present is False
    assert bad.mx_authenticated is False


def test_spf_over_ten_lookups_and_spf_that_does_not_parse(rig: Rig) -> None:
    results = rig.run(rig.settings(domains=["many.test", "syntax.test", "none.test"]))
    many = results.domains["many.test"]
    assert many.spf_valid is False and many.spf_lookups == 11
    syntax = results.domains["syntax.test"]
    assert syntax.spf_records == 1 and syntax.spf_valid is False
    assert syntax.dmarc_policy == "invalid"
    assert results.domains["none.test"].spf_records == 0
    assert results.domains["none.test"].spf_valid is False
    assert results.domains["none.test"].mx_hosts == []


def test_expected_mx_hosts(rig: Rig) -> None:
    dns = collector(rig, Clock(), domains=["good.test", "bad.test", "slow.test"],
                    sending_ips=[], mx_hosts=["MX.good.test.", "mx.other.test"])  # fmt: skip
    lines = exposition(dns).splitlines()
    for line in (
        'mail_dns_mx_expected{domain="good.test",mx="mx.good.test"} 1.0',
        'mail_dns_mx_expected{domain="good.test",mx="mx.other.test"} 0.0',
        'mail_dns_mx_expected{domain="bad.test",mx="mx.good.test"} 0.0',
        'mail_dns_mx_expected{domain="bad.test",mx="mx.other.test"} 0.0',
        'mail_dns_mx_unexpected_hosts{domain="good.test"} 0.0',
        'mail_dns_mx_unexpected_hosts{domain="bad.test"} 2.0',
        # DANE-checked although no domain names it
        'mail_dns_dane_tlsa_matches{mx="mx.other.test"} 1.0',
    ):
        assert line in lines, line
    assert not [line for line in lines if line.startswith("mail_dns_mx_") and "slow.test" in line]


def test_without_expected_mx_hosts_nothing_is_expected(results: Results) -> None:
    assert results.domains["good.test"].mx_expected == {}
    assert results.domains["good.test"].mx_unexpected is None
    assert "mx.other.test" not in results.dane


def test_timeouts_and_servfail_are_errors_not_bad_records(rig: Rig) -> None:
    results = rig.run(rig.settings(domains=["slow.test", "fail.test"], sending_ips=[]))
    for domain in ("slow.test", "fail.test"):
        records = results.domains[domain]
        assert records.spf_valid is None and records.dmarc_present is None
        assert records.mx_hosts is None and records.tls_rpt_present is None
    reasons = {reason for _, reason in results.check_errors()}
    assert reasons == {"timeout", "servfail"}
    assert {check for check, _ in results.check_errors()} >= {
        "mx",
        "spf",
        "dmarc",
        "dkim",
        "tls_rpt",
    }


# --- MTA-STS and DANE ---------------------------------------------------------------


def test_mta_sts_policy_covering_the_mx(results: Results) -> None:
    good = results.mta_sts["good.test"]
    assert good.record_present and good.policy_valid and good.mx_covered
    assert good.policy is not None
    assert (good.policy.mode, good.policy.max_age) == ("enforce", 604800)


def test_mta_sts_policy_not_covering_the_mx(results: Results) -> None:
    bad = results.mta_sts["bad.test"]
    assert bad.record_present and bad.policy_valid
    assert bad.mx_covered is False


def test_mta_sts_policy_over_untrusted_tls_is_an_error(rig: Rig, tmp_path: Path) -> None:
    other_ca = create_pki(tmp_path).ca_file
    results = rig.run(rig.settings(domains=["good.test"], mta_sts_ca_file=other_ca))
    assert results.mta_sts["good.test"].policy_valid is None
    assert ("mta_sts_policy", "tls") in results.check_errors()


def test_dane_matches_the_certificate_the_mx_shows(results: Results) -> None:
    assert results.dane["mx.good.test"].records == 1
    assert results.dane["mx.good.test"].matches is True
    assert results.dane["mx.good.test"].authenticated is True


def test_dane_mismatch(results: Results) -> None:
    assert results.dane["mx.bad.test"].matches is False
    assert results.dane["mx.bad.test"].authenticated is False
    assert "gone.bad.test" in results.dane and results.dane["gone.bad.test"].records == 0


def test_dane_and_mta_sts_share_one_handshake_per_address(rig: Rig) -> None:
    """Both checks judge the chain of one STARTTLS with each address (same port)."""
    before = rig.connections["127.0.0.1"]
    results = rig.run(rig.settings(domains=["good.test"], sending_ips=[]))
    assert results.dane["mx.good.test"].matches is True
    # The scripted server's certificate names localhost, not mx.good.test.
    assert results.mta_sts["good.test"].mx_certificates_valid == {"mx.good.test": False}
    assert rig.connections["127.0.0.1"] == before + 1


def test_dane_with_an_mx_that_does_not_answer_is_an_error(rig: Rig) -> None:
    results = rig.run(rig.settings(domains=["good.test"], dane_port=free_port()))
    assert results.dane["mx.good.test"].matches is None
    assert ("dane_smtp", "connect") in results.check_errors()


def test_dane_checks_every_address_of_the_mx(rig: Rig) -> None:
    dns = collector(rig, Clock(), domains=["multi.test", "split.test", "half.test", "wide.test"],
                    sending_ips=[], mta_sts=False)  # fmt: skip
    lines = exposition(dns).splitlines()
    for line in (
        'mail_dns_dane_tlsa_matches{mx="mx.multi.test"} 1.0',
        'mail_dns_dane_address_tlsa_matches{address="127.0.0.1",mx="mx.multi.test"} 1.0',
        'mail_dns_dane_address_tlsa_matches{address="::1",mx="mx.multi.test"} 1.0',
        # one address showing another certificate fails the MX
        'mail_dns_dane_tlsa_matches{mx="mx.split.test"} 0.0',
        'mail_dns_dane_address_tlsa_matches{address="127.0.0.1",mx="mx.split.test"} 1.0',
        'mail_dns_dane_address_tlsa_matches{address="127.0.0.2",mx="mx.split.test"} 0.0',
        # an address without a handshake is an error, not a mismatch
        'mail_dns_dane_tlsa_matches{mx="mx.half.test"} 1.0',
        'mail_dns_dane_addresses_checked{mx="mx.half.test"} 2.0',
        # six addresses: four checked, IPv4 and IPv6 alternately
        'mail_dns_dane_addresses_checked{mx="mx.wide.test"} 4.0',
        'mail_dns_dane_address_tlsa_matches{address="::1",mx="mx.wide.test"} 1.0',
        'mail_dns_check_errors_total{check="dane_smtp",reason="connect"} 3.0',
    ):
        assert line in lines, line
    assert not [line for line in lines if 'address="127.0.0.3"' in line]


def test_addresses_to_check_alternate_families_in_address_order() -> None:
    addresses = ["192.0.2.9", "2001:db8::2", "192.0.2.10", "2001:db8::1", "192.0.2.1"]
    assert addresses_to_check([*addresses, "192.0.2.9"]) == [
        "192.0.2.1", "2001:db8::1", "192.0.2.9", "2001:db8::2"
    ]  # fmt: skip
    assert addresses_to_check(["2001:db8::1"]) == ["2001:db8::1"]
    assert addresses_to_check([f"192.0.2.{n}" for n in range(9, 0, -1)]) == [
        "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"
    ]  # fmt: skip


def test_dane_with_unusable_records_only_does_not_match_and_needs_no_handshake(rig: Rig) -> None:
    results = rig.run(rig.settings(domains=["pkix.test"], dane_port=free_port()))
    assert results.dane["mx.pkix.test"] == Dane(2, 0, matches=False, authenticated=False)
    assert not [check for check, _ in results.check_errors() if check.startswith("dane")]


# --- TLSA records against chains (RFC 7672) ------------------------------------------


@dataclass(frozen=True)
class Certificates:
    leaf: x509.Certificate  # for localhost and mail.test.local, issued by ca
    ca: x509.Certificate
    expired: x509.Certificate  # issued by ca
    wronghost: x509.Certificate  # for other.example.net, issued by ca
    stranger: x509.Certificate  # a CA that issued none of them


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    pki = create_pki(tmp_path_factory.mktemp("tlsa"))
    stranger = create_pki(tmp_path_factory.mktemp("stranger"))

    def load(path: Path) -> x509.Certificate:
        return x509.load_pem_x509_certificate(path.read_bytes())

    return Certificates(load(pki.server_cert), load(pki.ca_file), load(pki.expired_cert),
                        load(pki.wronghost_cert), load(stranger.ca_file))  # fmt: skip


def _tlsa(usage: int, selector: int, mtype: int, certificate: x509.Certificate) -> Tlsa:
    """The record for ``certificate`` as RFC 6698 §2.1 defines it."""
    if selector == 0:
        selected = certificate.public_bytes(Encoding.DER)
    else:
        selected = certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
    digest = {0: lambda data: data, 1: lambda data: hashlib.sha256(data).digest(),
              2: lambda data: hashlib.sha512(data).digest()}[mtype]  # fmt: skip
    return Tlsa(usage, selector, mtype, digest(selected))


SELECTORS_AND_MATCHING_TYPES = [(s, m) for s in (0, 1) for m in (0, 1, 2)]


@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_AND_MATCHING_TYPES)
def test_dane_ee_matches_the_leaf(certificates: Certificates, selector: int, mtype: int) -> None:
    c = certificates
    record = _tlsa(3, selector, mtype, c.leaf)
    assert usable(record)
    assert tlsa_matches(record, [c.leaf, c.ca], "mail.test.local")
    assert not tlsa_matches(record, [c.wronghost, c.ca], "mail.test.local")
    assert not tlsa_matches(_tlsa(3, selector, mtype, c.ca), [c.leaf, c.ca], "mail.test.local")
    damaged = Tlsa(3, selector, mtype, record.data[:-1] + bytes([record.data[-1] ^ 1]))
    assert not tlsa_matches(damaged, [c.leaf, c.ca], "mail.test.local")


def test_dane_ee_checks_neither_name_nor_dates(certificates: Certificates) -> None:
    c = certificates
    assert tlsa_matches(_tlsa(3, 1, 1, c.expired), [c.expired], "mail.test.local")
    assert tlsa_matches(_tlsa(3, 1, 1, c.wronghost), [c.wronghost], "mx.elsewhere.test")


@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_AND_MATCHING_TYPES)
def test_dane_ta_matches_the_issuer_the_server_sent(
    certificates: Certificates, selector: int, mtype: int
) -> None:
    c = certificates
    record = _tlsa(2, selector, mtype, c.ca)
    assert usable(record)
    assert tlsa_matches(record, [c.leaf, c.ca], "mail.test.local")
    assert tlsa_matches(record, [c.leaf, c.stranger, c.ca], "MAIL.test.local")
    assert not tlsa_matches(record, [c.leaf], "mail.test.local")  # the anchor was not sent


def test_dane_ta_never_matches_the_leaf_itself(certificates: Certificates) -> None:
    c = certificates
    assert not tlsa_matches(_tlsa(2, 1, 1, c.leaf), [c.leaf, c.ca], "mail.test.local")


def test_dane_ta_that_did_not_issue_the_leaf_does_not_match(certificates: Certificates) -> None:
    c = certificates
    record = _tlsa(2, 1, 1, c.stranger)
    assert not tlsa_matches(record, [c.leaf, c.stranger], "mail.test.local")
    assert not tlsa_matches(record, [c.leaf, c.ca, c.stranger], "mail.test.local")


def test_dane_ta_needs_the_mx_name_in_the_leaf(certificates: Certificates) -> None:
    c = certificates
    record = _tlsa(2, 1, 1, c.ca)
    assert not tlsa_matches(record, [c.leaf, c.ca], "mx.elsewhere.test")
    assert not tlsa_matches(record, [c.wronghost, c.ca], "mail.test.local")
    assert not tlsa_matches(record, [c.leaf, c.ca], "not a host name")
    assert tlsa_matches(record, [c.wronghost, c.ca], "other.example.net")


def test_dane_ta_needs_a_leaf_within_its_dates(certificates: Certificates) -> None:
    c = certificates
    assert not tlsa_matches(_tlsa(2, 1, 1, c.ca), [c.expired, c.ca], "mail.test.local")


@pytest.mark.parametrize(
    ("usage", "selector", "mtype", "of"),
    [(0, 0, 1, "ca"), (0, 1, 1, "ca"), (1, 1, 1, "leaf"), (1, 0, 2, "leaf"), (3, 2, 1, "leaf"),
     (3, 1, 3, "leaf"), (4, 1, 1, "leaf")],
)  # fmt: skip
def test_pkix_usages_and_unknown_parameters_are_unusable(
    certificates: Certificates, usage: int, selector: int, mtype: int, of: str
) -> None:
    c = certificates
    # Data that would match if the record were usable (3 2 1 and 3 1 3 get 3 1 1's data).
    record = _tlsa(usage, min(selector, 1), min(mtype, 1), getattr(c, of))
    record = Tlsa(usage, selector, mtype, record.data)
    assert not usable(record)
    assert not tlsa_matches(record, [c.leaf, c.ca], "mail.test.local")


# --- reverse DNS ---------------------------------------------------------------------


def test_reverse_dns(results: Results) -> None:
    good, wrong, missing, v6 = (
        results.reverse[ip] for ip in ("192.0.2.25", "192.0.2.26", "192.0.2.27", IPV6)
    )
    assert (good.ptr_present, good.forward_confirmed, good.matches_helo) == (True, True, True)
    assert (wrong.ptr_present, wrong.forward_confirmed, wrong.matches_helo) == (True, False, False)
    assert (missing.ptr_present, missing.forward_confirmed, missing.matches_helo) == (
        False,
        False,
        False,
    )
    assert (v6.ptr_present, v6.forward_confirmed) == (True, True)


def test_reverse_dns_without_helo_name_and_with_a_silent_resolver(rig: Rig) -> None:
    results = rig.run(rig.settings(domains=[], helo_name=None))
    assert results.reverse["192.0.2.25"].matches_helo is None
    silent = rig.settings(
        domains=[], sending_ips=["192.0.2.25"], ip_blocklists=[],
        resolver=DnsResolverConfig(nameservers=["127.0.0.1"], port=free_port(), timeout="300ms"),
    )  # fmt: skip
    reverse = rig.run(silent).reverse["192.0.2.25"]
    assert reverse.ptr_present is None and reverse.error == "timeout"


# --- blocklists ----------------------------------------------------------------------


def test_query_names() -> None:
    assert dnsbl.query_name("192.0.2.25", "zen.spamhaus.org") == "25.2.0.192.zen.spamhaus.org"
    assert dnsbl.query_name(IPV6, "bl.test.") == f"{IPV6_NIBBLES}.bl.test"


def test_listed_with_every_return_code(results: Results) -> None:
    assert results.ip_listings[("bl.test", "192.0.2.25")] == dnsbl.Listing(
        codes=["127.0.0.2", "127.0.0.11"]
    )


def test_refused_answer_is_an_error_never_listed(results: Results) -> None:
    assert results.ip_listings[("bl.test", "192.0.2.26")] == dnsbl.Listing(error="refused")


def test_nxdomain_is_not_listed(results: Results) -> None:
    assert results.ip_listings[("bl.test", "192.0.2.27")] == dnsbl.Listing()


def test_ipv6_is_queried_in_nibble_form(rig: Rig, results: Results) -> None:
    assert results.ip_listings[("bl.test", IPV6)] == dnsbl.Listing(codes=["127.0.0.4"])
    assert (f"{IPV6_NIBBLES}.bl.test", "A") in rig.zone.queries


def test_timeout_and_unexpected_answers_are_errors(rig: Rig) -> None:
    results = rig.run(
        rig.settings(domains=[], sending_ips=["192.0.2.25", "192.0.2.28"],
                     ip_blocklists=["bl.test", "slowbl.test"])
    )  # fmt: skip
    assert results.ip_listings[("slowbl.test", "192.0.2.25")] == dnsbl.Listing(error="timeout")
    assert results.ip_listings[("bl.test", "192.0.2.28")] == dnsbl.Listing(
        error="unexpected_answer"
    )


def test_domain_blocklist(results: Results) -> None:
    assert results.domain_listings[("dbl.test", "bad.test")].codes == ["127.0.1.2"]
    assert results.domain_listings[("dbl.test", "good.test")] == dnsbl.Listing()


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([], dnsbl.Listing()),
        (["127.0.0.2"], dnsbl.Listing(codes=["127.0.0.2"])),
        (["127.0.0.255"], dnsbl.Listing(codes=["127.0.0.255"])),
        (["127.0.0.1"], dnsbl.Listing(error="unexpected_answer")),
        (["127.255.255.252"], dnsbl.Listing(error="refused")),
        (["127.0.0.2", "127.255.255.254"], dnsbl.Listing(error="refused")),
        (["10.0.0.1"], dnsbl.Listing(error="unexpected_answer")),
    ],
)
def test_classify(answers: list[str], expected: dnsbl.Listing) -> None:
    assert dnsbl.classify(answers) == expected


def test_ip_blocklists_do_not_list_in_127_0_1() -> None:
    assert dnsbl.classify(["127.0.1.2"]) == dnsbl.Listing(error="unexpected_answer")
    assert dnsbl.classify(["127.0.1.255"]) == dnsbl.Listing(error="unexpected_answer")


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([], dnsbl.Listing()),
        (["127.0.0.2"], dnsbl.Listing(codes=["127.0.0.2"])),
        (["127.0.0.254"], dnsbl.Listing(codes=["127.0.0.254"])),
        (["127.0.1.2"], dnsbl.Listing(codes=["127.0.1.2"])),
        (["127.0.1.254", "127.0.1.2"], dnsbl.Listing(codes=["127.0.1.2", "127.0.1.254"])),
        (["127.0.1.255"], dnsbl.Listing(error="refused")),  # DBL: "IP queries prohibited"
        (["127.0.1.2", "127.0.1.255"], dnsbl.Listing(error="refused")),
        (["127.255.255.254"], dnsbl.Listing(error="refused")),
        (["127.0.0.1"], dnsbl.Listing(error="unexpected_answer")),
        (["127.0.0.255"], dnsbl.Listing(error="unexpected_answer")),
        (["127.0.1.0"], dnsbl.Listing(error="unexpected_answer")),
        (["127.0.1.1"], dnsbl.Listing(error="unexpected_answer")),
        (["127.0.2.2"], dnsbl.Listing(error="unexpected_answer")),
    ],
)
def test_classify_domain_blocklist_answers(answers: list[str], expected: dnsbl.Listing) -> None:
    assert dnsbl.classify(answers, dnsbl.DOMAIN_LISTED) == expected


def test_a_dedicated_blocklist_resolver(rig: Rig) -> None:
    silent = DnsResolverConfig(nameservers=["127.0.0.1"], port=free_port(), timeout="300ms")
    results = rig.run(
        rig.settings(domains=[], sending_ips=["192.0.2.25"], blocklist_resolver=silent)
    )
    assert results.reverse["192.0.2.25"].forward_confirmed is True
    assert results.ip_listings[("bl.test", "192.0.2.25")].error == "timeout"


def test_both_resolvers_together_keep_within_max_in_flight() -> None:
    zone = Zone({}, hold=0.05)  # every name NXDOMAIN, each answer held back
    server = DnsServer(zone)

    def resolver() -> DnsResolverConfig:
        return DnsResolverConfig(nameservers=["127.0.0.1"], port=server.port, timeout="5s")

    settings = DnsConfig(
        domains=[f"d{n}.test" for n in range(4)],
        sending_ips=[f"192.0.2.{n}" for n in range(4)],
        ip_blocklists=["bl1.test", "bl2.test", "bl3.test"],
        domain_blocklists=["dbl.test"],
        resolver=resolver(),
        blocklist_resolver=resolver(),
        max_in_flight=3,
        mta_sts=False,
        dane=False,
    )
    try:
        results = asyncio.run(run_checks(settings))
    finally:
        server.close()
    assert len(results.ip_listings) == 12 and results.blocklist_errors() == []
    assert any(name.endswith(".bl1.test") for name, _ in zone.queries)
    assert 1 < zone.peak <= 3


def test_a_pass_asks_each_name_and_type_once(rig: Rig) -> None:
    # Both the IPv4 and the IPv6 sending address have the PTR mail.good.test, so both
    # forward checks need its addresses.
    before = len(rig.zone.queries)
    results = rig.run(rig.settings())
    asked = Counter(rig.zone.queries[before:])
    assert asked[("mail.good.test", "A")] == 1 and asked[("mail.good.test", "AAAA")] == 1
    assert [query for query, times in asked.items() if times > 1] == []
    assert results.reverse["192.0.2.25"].forward_confirmed is True
    assert results.reverse[IPV6].forward_confirmed is True


def test_a_pass_starts_at_most_max_in_flight_domains_at_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = ended = peak = 0
    real = checks_module._domain

    async def counted(*args: Any) -> DomainRecords:
        nonlocal started, ended, peak
        started += 1
        peak = max(peak, started - ended)
        try:
            return await real(*args)
        finally:
            ended += 1

    monkeypatch.setattr(checks_module, "_domain", counted)
    domains = [f"d{n}.nowhere.test" for n in range(8)]
    results = rig.run(rig.settings(domains=domains, max_in_flight=2, mta_sts=False, dane=False))
    assert sorted(results.domains) == domains
    assert (started, peak) == (8, 2)


# --- the collector: cache, exposition, registration -----------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def at_once(run: Callable[[], None]) -> None:
    run()


def collector(rig: Rig, clock: Clock, **overrides: object) -> DnsCollector:
    return DnsCollector(
        rig.settings(**overrides), clock=clock, background=at_once, mta_sts_url=rig.policy_url
    )


def exposition(collector: DnsCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_a_second_scrape_within_the_interval_sends_no_queries(rig: Rig) -> None:
    clock = Clock()
    dns = collector(rig, clock, interval="10m")
    before = len(rig.zone.queries)
    first = exposition(dns)
    sent = len(rig.zone.queries)
    assert sent > before
    clock.now += 599
    assert exposition(dns) == first
    assert len(rig.zone.queries) == sent
    clock.now += 1
    exposition(dns)
    assert len(rig.zone.queries) > sent


def test_scrapes_inside_the_interval_share_the_families_of_the_pass(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Results] = []
    real = collector_module.result_families

    def counted(results: Results) -> list[Metric]:
        built.append(results)
        return real(results)

    monkeypatch.setattr(collector_module, "result_families", counted)
    clock = Clock()
    dns = collector(rig, clock, interval="10m")
    first = exposition(dns)
    clock.now += 599
    assert exposition(dns) == first
    assert len(built) == 1
    clock.now += 1
    exposition(dns)
    assert len(built) == 2


def test_a_pass_is_written_once_and_scrapes_serve_its_text(rig: Rig) -> None:
    """A pass's families carry their text and its compressed part: a scrape serves those,
    the same bytes prometheus_client writes, and compresses nothing of them again."""
    clock = Clock()
    dns = collector(rig, clock, interval="10m", ip_blocklists=["bl.test"])
    registry = CollectorRegistry()
    registry.register(dns)
    first = list(registry_parts(registry))
    assert b"".join(text for text, _ in first) == generate_latest(registry)
    served = [part for _, part in first if part is not None]
    assert len(served) >= len(first) / 2  # the pass's families; the error counters are written
    clock.now += 599
    again = list(registry_parts(registry))
    assert [part for _, part in again if part is not None] == served
    assert all(a is b for a, b in zip(served, [p for _, p in again if p is not None], strict=True))
    body = gzip_member([part or compress(text) for text, part in again])
    assert gzip.decompress(body) == generate_latest(registry)


async def test_exposition_passes_promtool(rig: Rig) -> None:
    dns = collector(rig, Clock(), ip_blocklists=["bl.test", "slowbl.test"],
                    dkim_selectors=["mail", "old"])  # fmt: skip
    text = await asyncio.to_thread(exposition, dns)
    await check_metrics(text)
    for line in (
        'mail_dnsbl_listed{code="127.0.0.2",ip="192.0.2.25",zone="bl.test"} 1.0',
        'mail_dnsbl_listed{code="127.0.0.11",ip="192.0.2.25",zone="bl.test"} 1.0',
        'mail_dnsbl_listed{code="",ip="192.0.2.27",zone="bl.test"} 0.0',
        f'mail_dnsbl_listed{{code="127.0.0.4",ip="{IPV6}",zone="bl.test"}} 1.0',
        'mail_dnsbl_check_errors_total{reason="refused",zone="bl.test"} 1.0',
        'mail_dnsbl_check_errors_total{reason="timeout",zone="slowbl.test"} 4.0',
        'mail_dnsbl_check_errors_total{reason="servfail",zone="bl.test"} 0.0',
        'mail_dnsbl_domain_listed{code="127.0.1.2",domain="bad.test",zone="dbl.test"} 1.0',
        'mail_dns_spf_valid{domain="good.test"} 1.0',
        'mail_dns_spf_valid{domain="bad.test"} 0.0',
        'mail_dns_spf_lookups{domain="good.test"} 3.0',
        'mail_dns_spf_records{domain="bad.test"} 2.0',
        'mail_dns_dmarc_present{domain="bad.test"} 0.0',
        'mail_dns_dmarc_policy_info{domain="good.test",policy="reject"} 1.0',
        'mail_dns_dmarc_applied_ratio{domain="good.test"} 0.5',
        'mail_dns_dkim_key_size{domain="good.test",selector="mail"} 2048.0',
        'mail_dns_dkim_key_present{domain="bad.test",selector="old"} 0.0',
        'mail_dns_mx_resolvable{domain="bad.test",mx="gone.bad.test"} 0.0',
        'mail_dns_tls_rpt_present{domain="bad.test"} 0.0',
        'mail_dns_mta_sts_mode_info{domain="good.test",mode="enforce"} 1.0',
        'mail_dns_mta_sts_max_age_seconds{domain="good.test"} 604800.0',
        'mail_dns_mta_sts_mx_covered{domain="bad.test"} 0.0',
        'mail_dns_dane_tlsa_usable_records{mx="mx.good.test"} 1.0',
        'mail_dns_dane_tlsa_matches{mx="mx.good.test"} 1.0',
        'mail_dns_dane_tlsa_matches{mx="mx.bad.test"} 0.0',
        'mail_dns_dnssec_validated{name="_25._tcp.mx.good.test"} 1.0',
        'mail_dns_dnssec_validated{name="bad.test"} 0.0',
        'mail_dns_ptr_forward_confirmed{ip="192.0.2.26"} 0.0',
        'mail_dns_ptr_matches_helo{ip="192.0.2.25"} 1.0',
        'mail_dns_ptr_present{ip="192.0.2.27"} 0.0',
    ):
        assert line in text.splitlines(), line
    assert 'ip="192.0.2.26",zone="bl.test"' not in text  # refused: an error, never a listing


def test_error_counters_add_up_over_passes(rig: Rig) -> None:
    clock = Clock()
    dns = collector(rig, clock, domains=[], sending_ips=["192.0.2.26"], interval="1m")
    exposition(dns)
    clock.now += 60
    text = exposition(dns)
    assert 'mail_dnsbl_check_errors_total{reason="refused",zone="bl.test"} 2.0' in text


def test_a_rebuilt_collector_goes_on_with_the_error_counters(rig: Rig) -> None:
    """A reload that changes the section: the counters of zones still listed go on, those of
    a zone no longer listed end."""
    first = collector(rig, Clock(), domains=[], sending_ips=["192.0.2.26"],
                      ip_blocklists=["bl.test", "slowbl.test"])  # fmt: skip
    exposition(first)
    second = DnsCollector(
        rig.settings(domains=[], sending_ips=["192.0.2.25"], ip_blocklists=["bl.test"]),
        clock=Clock(), background=at_once, mta_sts_url=rig.policy_url, previous=first,
    )  # fmt: skip
    text = exposition(second)
    assert 'mail_dnsbl_check_errors_total{reason="refused",zone="bl.test"} 1.0' in text
    assert "slowbl.test" not in text


def test_a_failing_pass_fails_the_collector(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: object) -> Results:
        raise RuntimeError("boom")

    monkeypatch.setattr("mail_exporter.collectors.dns.collector.run_checks", broken)
    with pytest.raises(CollectorError, match="boom"):
        collector(rig, Clock()).collect()


def test_registered_and_configured() -> None:
    assert "dns" in COLLECTORS
    config = Config.model_validate(
        {"collectors": {"dns": {"enabled": True, "domains": ["example.com"],
                                "sending_ips": ["2001:DB8::1"]}}}
    )  # fmt: skip
    section = config.collectors.dns
    assert section.enabled and section.sending_ips == ["2001:db8::1"]
    assert float(section.interval) == 900
    assert section.mx_hosts == []
    assert "zen.spamhaus.org" in section.ip_blocklists
    assert isinstance(COLLECTORS["dns"].build(section, None), DnsCollector)
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        Config.model_validate({"collectors": {"dns": {"sending_ips": ["mail.example.com"]}}})
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        Config.model_validate({"collectors": {"dns": {"blocklists": []}}})


def test_a_hundred_domains_and_twenty_ips_on_ten_blocklists(rig: Rig) -> None:
    # How fast (issue 9: under 5 s) is measured by bench/dns_checks.py against a real DNS server.
    settings = rig.settings(
        domains=[f"d{n}.test" for n in range(98)] + ["good.test", "bad.test"],
        sending_ips=[f"192.0.2.{n}" for n in range(20, 40)],
        ip_blocklists=["bl.test"] + [f"bl{n}.test" for n in range(9)],
        domain_blocklists=["dbl.test"],
        max_in_flight=20,
    )
    results = rig.run(settings)
    assert len(results.ip_listings) == 200 and len(results.domains) == 100
    assert results.check_errors() == []
    assert sorted(results.blocklist_errors()) == [
        ("bl.test", "refused"),
        ("bl.test", "unexpected_answer"),
    ]
