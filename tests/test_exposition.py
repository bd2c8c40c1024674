"""What the probe families say: the direct text renderer says exactly what
prometheus_client would say, and an unverified certificate's facts reach both
/probe and /metrics."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mail_exporter.config.probes import ModuleConfig, TargetConfig
from mail_exporter.exporter import Exporter
from mail_exporter.exposition import header, sample_lines, spec_text
from mail_exporter.latency import LATENCY
from mail_exporter.metric_spec import MetricSpec, as_is
from mail_exporter.metrics import probe_families, probe_text
from mail_exporter.probes.result import Failure, FailureReason, Phase, ProbeResult
from mail_exporter.scheduler import _HEADERS, SCHEDULED_LABELS, TargetState, scheduled_families
from mail_exporter.tls_facts import TLSFacts, certificate_identity
from mail_exporter.web import make_app
from tests.realservers.pki import PKI
from tests.scripted import scripted_server, server_context, smtp_script


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def parsed(text: str) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    return [
        (f.name, f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    ]


def test_same_exposition_as_prometheus_client() -> None:
    state = TargetState(
        # Built unvalidated: config names cannot hold these characters, the renderer must anyway.
        TargetConfig.model_construct(name='odd "name"\\x', address="mx:25", module="smtp"),
        ModuleConfig(protocol="smtp", tls="implicit"),
    )
    result = ProbeResult(protocol="smtp", duration_seconds=0.25, phases={Phase.CONNECT: 0.01})
    result.failure = Failure(Phase.TLS_HANDSHAKE, FailureReason.TLS, "expired")
    result.tls = TLSFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384", 1.7e9, 1.6e9, 1.7e9, "CN=x", "CN=y",
                          False, "expired")  # fmt: skip
    state.record(result)
    families = [
        *probe_families(SCHEDULED_LABELS, state.labels, result, state.failures, state.last_success),
        LATENCY.after(SCHEDULED_LABELS).family([(state.labels, state.latency)]),
    ]
    families = [family for family in families if family.samples]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    rendered = dict(zip([name for name, _ in _HEADERS], state.rendered, strict=True))
    ours = "".join(header(f) + rendered[f.name].decode() for f in families)
    assert parsed(ours) == parsed(generate_latest(registry).decode())
    assert 'target="odd \\"name\\"\\\\x"' in ours


def probe_result(failed: bool) -> tuple[ProbeResult, dict[str, float]]:
    """A probe's result with a server's odd text in its labels, and its failure counts."""
    result = ProbeResult(protocol="smtp", duration_seconds=0.00123, success=not failed)
    result.phases = {Phase.CONNECT: 1.5e-05, Phase.BANNER: 0.25, Phase.QUIT: 12.0}
    result.tls = TLSFacts("TLSv1.3", 'odd "cipher"\\\n', 1.7e9, 1.6e9, 1.7e9, "CN=x\n",
                          "CN=y", not failed, "expired" if failed else None)  # fmt: skip
    result.starttls_offered, result.auth_mechanism = True, "PLAIN"
    if failed:
        result.failure = Failure(Phase.TLS_HANDSHAKE, FailureReason.TLS, "expired")
    return result, ({FailureReason.TLS.value: 1.0} if failed else {})


@pytest.mark.parametrize("failed", [False, True])
@pytest.mark.parametrize("names", [("protocol",), SCHEDULED_LABELS])
def test_probe_text_byte_for_byte_as_prometheus_client(
    pki: PKI, failed: bool, names: tuple[str, ...]
) -> None:
    """/probe's text, written straight from the rows: what generate_latest writes for the
    families it used to be rendered from, to the byte (every family, label and value, label
    order, number format, escaping of a server's text in label values, a chain of two)."""
    result, failures = probe_result(failed)
    certificate = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    leaf = certificate_identity(certificate, certificate.public_bytes(Encoding.DER))
    assert result.tls is not None
    result.tls = dataclasses.replace(result.tls, chain=(leaf, leaf), chain_length=2)
    labels = ['odd "name"\\x\n', "module", "smtp"][-len(names) :]
    last_success = None if failed else 1.7e9 + 0.123
    families = [
        family
        for family in probe_families(names, labels, result, failures, last_success)
        if family.samples
    ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    expected = generate_latest(registry).decode()
    assert probe_text(names, labels, result, failures, last_success) == expected


@pytest.mark.parametrize("kind", ["gauge", "counter"])
def test_spec_text_of_a_family_without_labels(kind: Literal["gauge", "counter"]) -> None:
    """A family without labels is written without braces, as generate_latest does."""
    spec = MetricSpec("mail_test_total", "Help \\ with\na break.", kind, (), as_is)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([spec.family([((), 3.0)])]))
    assert spec_text(spec, [((), 3.0), ((), None)]) == generate_latest(registry).decode()
    assert spec_text(spec, [((), None)]) == ""


def test_sample_lines_of_an_empty_family() -> None:
    assert all(sample_lines(family) == "" for family in scheduled_families())


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of the sample ``name`` with exactly ``labels``, if the exposition has it."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def labelled(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The labels and value of each sample ``name`` in the exposition."""
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


async def scheduled_result(exporter: Exporter) -> None:
    for _ in range(100):
        if all(state.result is not None for state in exporter.scheduler.states.values()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the scheduled probe produced no result")


async def scrape_both(directory: Path, address: str, tls_config: str) -> dict[str, str]:
    """/probe of ``address`` by an smtps module with ``tls_config`` (a YAML flow mapping),
    and /metrics once a scheduled probe of it reported, from an exporter in this process."""
    config = directory / "config.yml"
    config.write_text(f"""\
global: {{interval: 1s}}
modules:
  smtps: {{protocol: smtp, tls: implicit, timeout: 5s, tls_config: {tls_config}}}
targets:
  - {{name: mx, address: "{address}", module: smtps}}
""")
    exporter = Exporter(config, {})
    client: TestClient[object, object] = TestClient(TestServer(make_app(exporter)))
    await client.start_server()
    exporter.start()
    try:
        probed = await client.get("/probe", params={"target": address, "module": "smtps"})
        await scheduled_result(exporter)
        scraped = await client.get("/metrics")
        return {"/probe": await probed.text(), "/metrics": await scraped.text()}
    finally:
        exporter.stop()
        await client.close()


@pytest.mark.parametrize("flaw", ["expired", "wronghost"])
async def test_unverified_certificate_reaches_probe_and_metrics(
    pki: PKI, tmp_path: Path, flaw: str
) -> None:
    """An expired or wrong-host certificate: the real NotAfter, and verified 0."""
    cert_file: Path = getattr(pki, f"{flaw}_cert")
    not_after = x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc
    tls = server_context(cert_file, getattr(pki, f"{flaw}_key"))
    async with scripted_server(smtp_script(["220 mx.test ESMTP"]), tls) as address:
        texts = await scrape_both(tmp_path, address, f"{{ca_file: {pki.ca_file}}}")
    labels = {
        "/probe": {"protocol": "smtp"},
        "/metrics": {"target": "mx", "module": "smtps", "protocol": "smtp"},
    }
    failed_in = {"phase": "tls_handshake", "reason": "tls"}
    for endpoint, text in texts.items():
        at = labels[endpoint]
        expiry = sample(text, "mail_tls_cert_expiry_timestamp_seconds", at)
        assert expiry == not_after.timestamp(), endpoint
        assert sample(text, "mail_tls_cert_verified", at) == 0.0, endpoint
        assert sample(text, "mail_probe_success", at) == 0.0, endpoint
        assert sample(text, "mail_probe_failure_info", at | failed_in) == 1.0, endpoint
