"""SPF parsing and RFC 7208's lookup count, on records given as a dict."""

from __future__ import annotations

import pytest

from mail_exporter.collectors.dns import spf


def lookup_in(records: dict[str, list[str]], errors: dict[str, str] | None = None) -> spf.TxtLookup:
    async def lookup(name: str) -> tuple[list[str] | None, str | None]:
        if errors and name in errors:
            return None, errors[name]
        return records.get(name), None

    return lookup


async def count(records: dict[str, list[str]], domain: str = "d.test") -> int:
    return await spf.count_lookups(domain, lookup_in(records))


async def test_counts_every_mechanism_that_costs_a_lookup() -> None:
    records = {"d.test": ["v=spf1 a mx ptr exists:%{i}.x.test ip4:192.0.2.1 ip6:::1 -all"]}
    assert await count(records) == 4


async def test_counts_through_include_and_redirect() -> None:
    records = {
        "d.test": ["v=spf1 include:a.test redirect=b.test"],
        "a.test": ["v=spf1 mx ~all"],
        "b.test": ["v=spf1 a include:c.test -all"],
        "c.test": ["v=spf1 ip4:192.0.2.0/24 -all"],
    }
    assert await count(records) == 5  # include, redirect; mx in a.test; a, include in b.test


async def test_redirect_is_ignored_when_the_record_has_all() -> None:
    records = {"d.test": ["v=spf1 -all redirect=b.test"], "b.test": ["v=spf1 mx -all"]}
    assert await count(records) == 0


async def test_an_include_loop_stops_past_the_limit() -> None:
    records = {"d.test": ["v=spf1 include:d.test -all"]}
    assert await count(records) == spf.LOOKUP_LIMIT + 1


async def test_macro_targets_count_once_and_are_not_followed() -> None:
    assert await count({"d.test": ["v=spf1 include:%{d}.x.test -all"]}) == 1


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ({"d.test": ["v=spf1 -all", "v=spf1 mx -all"]}, "2 SPF records"),
        ({}, "0 SPF records"),
        ({"d.test": ["v=spf1 include:gone.test -all"]}, "0 SPF records at gone.test"),
        ({"d.test": ["v=spf1 bogus -all"]}, "unknown term"),
        ({"d.test": ["v=spf1 include -all"]}, "include needs a value"),
        ({"d.test": ["v=spf1 redirect=a.test redirect=b.test"]}, "more than one redirect"),
    ],
)
async def test_permerrors(records: dict[str, list[str]], message: str) -> None:
    with pytest.raises(spf.SpfError, match=message):
        await count(records)


async def test_a_failed_lookup_makes_the_verdict_unknown() -> None:
    lookup = lookup_in({"d.test": ["v=spf1 include:a.test -all"]}, {"a.test": "timeout"})
    with pytest.raises(spf.SpfUnknown, match="timeout"):
        await spf.count_lookups("d.test", lookup)


def test_spf_records_are_picked_by_version_only() -> None:
    texts = ["v=spf1 -all", "V=SPF1", "v=spf10 -all", "verification=1", "v=spf1"]
    assert spf.spf_records(texts) == ["v=spf1 -all", "V=SPF1", "v=spf1"]


def test_modifiers_and_cidr_parse() -> None:
    terms = spf.parse("v=spf1 a/24 mx:m.test/24//64 exp=explain.test -all")
    assert [(t.name, t.target, t.modifier) for t in terms] == [
        ("a", None, False), ("mx", "m.test", False), ("exp", "explain.test", True),
        ("all", None, False),
    ]  # fmt: skip
