"""TLS-RPT reports (RFC 8460 section 4).

The JSON is loaded only when it is at most ``max_json_bytes`` long (a loaded document
costs up to some 20 times its size: ``[{},{},…]`` is a 64-byte dict for every 3 bytes),
nesting too deep for the parser is ``malformed`` like any JSON that does not parse,
and a report of more than ``max_records`` policies and failure details together is
``too_many_records``. Required: ``organization-name``, ``report-id``, ``policies``, and
in each policy ``policy`` (``policy-type``, ``policy-domain``) and ``summary`` (both
session counts); each failure detail needs ``result-type`` and ``failed-session-count``.
A count must be a JSON integer from 0 to 2**53 (not a float, a string or a boolean).
Failure details of one result type (one per sending or receiving host) are summed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mail_exporter.collectors.reports.limits import Limits
from mail_exporter.collectors.reports.rejection import Rejected
from mail_exporter.printable import printable

MAX_NUMBER = 2**53
TEXT_LIMIT = 256
DOMAIN_LIMIT = 253


@dataclass(frozen=True, slots=True)
class TlsRptPolicy:
    policy_type: str  # policy/policy-type, lowercased
    policy_domain: str  # lowercased, trailing dot removed
    successful: int  # summary/total-successful-session-count
    failed: int  # summary/total-failure-session-count
    # (result-type lowercased, failed-session-count) from failure-details
    failures: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class TlsRptReport:
    reporter: str  # organization-name
    report_id: str  # report-id
    policies: tuple[TlsRptPolicy, ...]


def malformed(detail: str) -> Rejected:
    return Rejected("tlsrpt", "malformed", detail)


def member(document: object, name: str) -> object:
    if not isinstance(document, dict) or name not in document:
        raise malformed(f"no {name}")
    return document[name]


def obj(document: object, name: str) -> dict[str, object]:
    value = member(document, name)
    if not isinstance(value, dict):
        raise malformed(f"{name} is not an object")
    return value


def array(document: object, name: str, default: list[object] | None = None) -> list[object]:
    if default is not None and isinstance(document, dict) and name not in document:
        return default
    value = member(document, name)
    if not isinstance(value, list):
        raise malformed(f"{name} is not an array")
    return value


def string(document: object, name: str, limit: int = TEXT_LIMIT) -> str:
    value = member(document, name)
    if not isinstance(value, str) or not value.strip():
        raise malformed(f"{name} is not a text")
    value = value.strip()
    return value if len(value) <= limit and value.isprintable() else printable(value, limit)


def count(document: object, name: str) -> int:
    value = member(document, name)
    if type(value) is not int or not 0 <= value <= MAX_NUMBER:
        raise malformed(f"{name} is not a count: {printable(repr(value), 40)}")
    return value


def policy(entry: object) -> TlsRptPolicy:
    applied, summary = obj(entry, "policy"), obj(entry, "summary")
    domain = string(applied, "policy-domain", DOMAIN_LIMIT).lower().rstrip(".")
    if not domain:
        raise malformed("policy-domain is empty")
    failures: dict[str, int] = {}
    for detail in array(entry, "failure-details", []):
        result = string(detail, "result-type").lower()
        failures[result] = failures.get(result, 0) + count(detail, "failed-session-count")
    return TlsRptPolicy(
        policy_type=string(applied, "policy-type").lower(),
        policy_domain=domain,
        successful=count(summary, "total-successful-session-count"),
        failed=count(summary, "total-failure-session-count"),
        failures=tuple(failures.items()),
    )


def parse_tlsrpt(data: bytes, limits: Limits) -> TlsRptReport:
    """The report in ``data`` (JSON); raises :class:`.rejection.Rejected`."""
    if len(data) > limits.max_json_bytes:
        raise Rejected("tlsrpt", "attachment_too_large", f"{len(data)} bytes of JSON")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError
        raise malformed(str(error)) from None
    entries = array(document, "policies")
    records = len(entries) + sum(
        len(details)
        for entry in entries
        if isinstance(entry, dict) and isinstance(details := entry.get("failure-details"), list)
    )
    if records > limits.max_records:
        raise Rejected("tlsrpt", "too_many_records", f"{records} policies and failure details")
    return TlsRptReport(
        reporter=string(document, "organization-name"),
        report_id=string(document, "report-id"),
        policies=tuple(policy(entry) for entry in entries),
    )
