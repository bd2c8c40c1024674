"""SPF parsing and RFC 7208's lookup and void-lookup counts.

The walk itself runs on answers given as dicts (:class:`FakeDns`); the checks of the
DNS collector run it against the scripted DNS server over the wire, through to the
exposition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mail_exporter.collectors.dns import spf
from mail_exporter.collectors.dns.collector import DnsCollector
from mail_exporter.collectors.dns.config import DnsConfig, DnsResolverConfig
from tests.dnsserver import DnsServer, Zone, txt


@dataclass
class FakeDns:
    """Answers from dicts: a name missing from one has no records of that kind (void)."""

    txt: dict[str, list[str]]
    mx: dict[str, list[str]] = field(default_factory=dict)
    addresses: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # name: reason, for every kind
    asked: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)

    def queries(self) -> spf.Queries:
        return spf.Queries(
            txt=self._lookup("txt", self.txt),
            mx=self._lookup("mx", self.mx),
            addresses=self._lookup("addresses", self.addresses),
        )

    def _lookup(self, kind: str, answers: dict[str, list[str]]) -> spf.Lookup:
        async def lookup(name: str) -> tuple[list[str] | None, str | None]:
            self.asked.append((kind, name))
            if name in self.errors:
                return None, self.errors[name]
            return answers.get(name), None

        return lookup


async def count(dns: FakeDns, domain: str = "d.test") -> spf.Cost:
    return await spf.count_lookups(domain, dns.queries())


# --- the lookup count --------------------------------------------------------------


async def test_counts_every_mechanism_that_costs_a_lookup() -> None:
    dns = FakeDns(
        {"d.test": ["v=spf1 a mx ptr exists:%{i}.x.test ip4:192.0.2.1 ip6:::1 -all"]},
        mx={"d.test": ["mx.d.test"]},
        addresses={"d.test": ["192.0.2.1"], "mx.d.test": ["192.0.2.2"]},
    )
    assert await count(dns) == spf.Cost(lookups=4, void=0)


async def test_counts_through_include_and_redirect() -> None:
    dns = FakeDns({
        "d.test": ["v=spf1 include:a.test redirect=b.test"],
        "a.test": ["v=spf1 mx ~all"],
        "b.test": ["v=spf1 a include:c.test -all"],
        "c.test": ["v=spf1 ip4:192.0.2.0/24 -all"],
    })  # fmt: skip
    assert (await count(dns)).lookups == 5  # include, redirect; mx in a.test; a, include in b.test


async def test_redirect_is_ignored_when_the_record_has_all() -> None:
    dns = FakeDns({"d.test": ["v=spf1 -all redirect=b.test"], "b.test": ["v=spf1 mx -all"]})
    assert await count(dns) == spf.Cost(lookups=0, void=0)
    assert ("txt", "b.test") not in dns.asked


async def test_an_include_loop_stops_past_the_limit() -> None:
    dns = FakeDns({"d.test": ["v=spf1 include:d.test -all"]})
    assert (await count(dns)).lookups == spf.LOOKUP_LIMIT + 1
    assert len(dns.asked) == spf.LOOKUP_LIMIT + 1  # the record and 10 includes of it


async def test_an_include_loop_through_mx_hosts_stays_bounded() -> None:
    # The most a loop can cost: every other term an mx with the most hosts allowed, each
    # host looked up; the walk ends at the 11th term as it does without the mx.
    hosts = [f"mx{n}.d.test" for n in range(spf.MX_HOST_LIMIT)]
    dns = FakeDns(
        {"d.test": ["v=spf1 mx include:d.test -all"]},
        mx={"d.test": hosts},
        addresses={host: ["192.0.2.1"] for host in hosts},
    )
    assert await count(dns) == spf.Cost(lookups=spf.LOOKUP_LIMIT + 1, void=0)
    assert Counter(kind for kind, _ in dns.asked) == {"txt": 6, "mx": 5, "addresses": 50}


async def test_macro_targets_count_once_and_are_not_followed() -> None:
    dns = FakeDns({"d.test": ["v=spf1 include:%{d}.x.test a:%{i}.a.test mx:%{d} -all"]})
    assert await count(dns) == spf.Cost(lookups=3, void=0)
    assert dns.asked == [("txt", "d.test")]


# --- void lookups ------------------------------------------------------------------

ADDRESSES = {"host.test": ["192.0.2.1"], "mx.mail.test": ["2001:db8::25"]}


@pytest.mark.parametrize(
    ("record", "answers", "void"),
    [
        pytest.param("v=spf1 a:host.test mx:mail.test -all", {}, 0, id="every-name-resolves"),
        pytest.param("v=spf1 a:gone.test mx:nomx.test -all", {}, 2, id="a-and-mx-without-records"),
        pytest.param("v=spf1 a mx -all", {}, 2, id="bare-a-and-mx-of-the-domain"),
        pytest.param("v=spf1 mx:m.test -all", {"m.test": ["gone1.test", "gone2.test"]}, 2,
                     id="mx-hosts-without-addresses"),
        pytest.param("v=spf1 a:gone.test mx:nomx.test mx:m.test -all", {"m.test": ["gone.test"]},
                     3, id="three"),
        pytest.param("v=spf1 a:gone.test mx:m.test -all",
                     {"m.test": ["gone1.test", "gone2.test", "gone3.test"]}, 3, id="stops-at-three"),
        pytest.param("v=spf1 a:gone.test mx:nomx.test include:i.test -all", {}, 3,
                     id="three-through-an-include"),
        pytest.param("v=spf1 mx:null.test mx:m.test -all",
                     {"null.test": [""], "m.test": ["mx.mail.test", "gone.test"]}, 1,
                     id="a-null-mx-is-an-answer"),
    ],
)  # fmt: skip
async def test_void_lookups(record: str, answers: dict[str, list[str]], void: int) -> None:
    dns = FakeDns(
        {"d.test": [record], "i.test": ["v=spf1 a -all"]},
        mx={"mail.test": ["mx.mail.test"], **answers},
        addresses=ADDRESSES,
    )
    cost = await count(dns)
    assert cost.void == void
    assert cost.within_limits() is (void <= spf.VOID_LIMIT)


async def test_bare_a_and_mx_in_an_include_name_the_included_domain() -> None:
    dns = FakeDns(
        {"d.test": ["v=spf1 include:_spf.d.test -all"], "_spf.d.test": ["v=spf1 a mx -all"]},
        mx={"d.test": ["mx.d.test"]},
        addresses={"d.test": ["192.0.2.1"], "mx.d.test": ["192.0.2.2"]},
    )
    assert await count(dns) == spf.Cost(lookups=3, void=2)
    assert {("addresses", "_spf.d.test"), ("mx", "_spf.d.test")} <= set(dns.asked)


async def test_void_counting_stops_past_the_limit_and_lookups_go_on() -> None:
    dns = FakeDns({
        "d.test": ["v=spf1 a:v1.test a:v2.test mx:v3.test a:v4.test mx:v5.test include:i.test -all"],
        "i.test": ["v=spf1 ip4:192.0.2.0/24 -all"],
    })  # fmt: skip
    assert await count(dns) == spf.Cost(lookups=6, void=spf.VOID_LIMIT + 1)
    assert ("addresses", "v4.test") not in dns.asked and ("mx", "v5.test") not in dns.asked
    assert ("txt", "i.test") in dns.asked


async def test_mx_hosts_past_the_limit_are_not_looked_up() -> None:
    hosts = [f"mx{n}.d.test" for n in range(spf.MX_HOST_LIMIT + 1)]
    dns = FakeDns({"d.test": ["v=spf1 mx -all"]}, mx={"d.test": hosts})
    with pytest.raises(spf.SpfError, match="11 MX hosts at d.test, more than 10"):
        await count(dns)
    assert not any(kind == "addresses" for kind, _ in dns.asked)


# --- permerrors and unknown verdicts -----------------------------------------------


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ({"d.test": ["v=spf1 -all", "v=spf1 mx -all"]}, "2 SPF records"),
        ({}, "0 SPF records"),
        # An include or redirect target without an SPF record is a permerror on its own
        # (RFC 7208 5.2, 6.1), whether the name does not exist (a void lookup) or has
        # other TXT records: one such include is enough, however few lookups are void.
        ({"d.test": ["v=spf1 include:gone.test -all"]}, "0 SPF records at gone.test"),
        ({"d.test": ["v=spf1 include:other.test -all"], "other.test": ["verification=1"]},
         "0 SPF records at other.test"),
        ({"d.test": ["v=spf1 redirect=gone.test"]}, "0 SPF records at gone.test"),
        ({"d.test": ["v=spf1 bogus -all"]}, "unknown term"),
        ({"d.test": ["v=spf1 include -all"]}, "include needs a value"),
        ({"d.test": ["v=spf1 redirect=a.test redirect=b.test"]}, "more than one redirect"),
        ({"d.test": ["v=spf1 include:a..test -all"]}, "invalid domain 'a..test'"),
        ({"d.test": [f"v=spf1 a:{'x' * 64}.test -all"]}, "invalid domain"),
        ({"d.test": ["v=spf1 include:. -all"]}, "invalid domain '.'"),
    ],
)  # fmt: skip
async def test_permerrors(records: dict[str, list[str]], message: str) -> None:
    dns = FakeDns(records)
    with pytest.raises(spf.SpfError, match=message):
        await count(dns)
    assert all(kind == "txt" for kind, _ in dns.asked)


@pytest.mark.parametrize(
    "record", ["v=spf1 include:a.test -all", "v=spf1 a:a.test -all", "v=spf1 mx:a.test -all",
               "v=spf1 mx:m.test -all"],
)  # fmt: skip
async def test_a_failed_lookup_makes_the_verdict_unknown(record: str) -> None:
    dns = FakeDns({"d.test": [record]}, mx={"m.test": ["a.test"]}, errors={"a.test": "timeout"})
    with pytest.raises(spf.SpfUnknown, match="timeout"):
        await count(dns)


def test_spf_records_are_picked_by_version_only() -> None:
    texts = ["v=spf1 -all", "V=SPF1", "v=spf10 -all", "verification=1", "v=spf1"]
    assert spf.spf_records(texts) == ["v=spf1 -all", "V=SPF1", "v=spf1"]


def test_modifiers_and_cidr_parse() -> None:
    terms = spf.parse("v=spf1 a/24 mx:m.test/24//64 exp=explain.test -all")
    assert [(t.name, t.target, t.modifier) for t in terms] == [
        ("a", None, False), ("mx", "m.test", False), ("exp", "explain.test", True),
        ("all", None, False),
    ]  # fmt: skip


# --- through the DNS collector, over the wire --------------------------------------

VOID_ZONE: dict[tuple[str, str], list[str]] = {
    # void0.test: its a and its MX host resolve
    ("void0.test", "TXT"): [txt("v=spf1 a mx -all")],
    ("void0.test", "A"): ["192.0.2.1"],
    ("void0.test", "MX"): ["10 mx.void0.test."],
    ("mx.void0.test", "AAAA"): ["2001:db8::25"],
    # void2.test: no address of its own (NOERROR, no records), mx: a name that does not
    # exist (NXDOMAIN): at the limit, still valid
    ("void2.test", "TXT"): [txt("v=spf1 a mx:nomx.void2.test -all")],
    # void3.test: an MX host without an address, an a: name that does not exist, and in
    # its include an a without records; the include's null MX is an answer, not void
    ("void3.test", "TXT"): [txt("v=spf1 mx a:gone.void3.test include:_spf.void3.test -all")],
    ("void3.test", "MX"): ["10 gone-mx.void3.test."],
    ("_spf.void3.test", "TXT"): [txt("v=spf1 mx a -all")],
    ("_spf.void3.test", "MX"): ["0 ."],
    # spfinclude.test: includes a name without an SPF record (RFC 7208 5.2)
    ("spfinclude.test", "TXT"): [txt("v=spf1 include:other.spfinclude.test -all")],
    ("other.spfinclude.test", "TXT"): [txt("google-site-verification=abc")],
}


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer(Zone(VOID_ZONE))
    yield server
    server.close()


def test_void_lookups_are_exported_beside_the_lookups(dns_server: DnsServer) -> None:
    settings = DnsConfig.model_validate({
        "enabled": True,
        "domains": ["void0.test", "void2.test", "void3.test", "spfinclude.test"],
        "ip_blocklists": [],
        "domain_blocklists": [],
        "resolver": DnsResolverConfig(nameservers=["127.0.0.1"], port=dns_server.port,
                                      timeout="1s"),
        "mta_sts": False,
        "dane": False,
    })  # fmt: skip
    registry = CollectorRegistry()
    registry.register(DnsCollector(settings, background=lambda run: run()))
    lines = generate_latest(registry).decode().splitlines()
    for line in (
        "# TYPE mail_dns_spf_void_lookups gauge",
        'mail_dns_spf_void_lookups{domain="void0.test"} 0.0',
        'mail_dns_spf_void_lookups{domain="void2.test"} 2.0',
        'mail_dns_spf_void_lookups{domain="void3.test"} 3.0',
        'mail_dns_spf_lookups{domain="void3.test"} 5.0',
        'mail_dns_spf_valid{domain="void0.test"} 1.0',
        'mail_dns_spf_valid{domain="void2.test"} 1.0',
        'mail_dns_spf_valid{domain="void3.test"} 0.0',
        'mail_dns_spf_valid{domain="spfinclude.test"} 0.0',
    ):
        assert line in lines, line
    assert not any(line.startswith("mail_dns_check_errors_total{") for line in lines)
    assert not any('domain="spfinclude.test"' in line and "_lookups{" in line for line in lines)
