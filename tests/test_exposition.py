"""The direct text renderer says exactly what prometheus_client would say."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mail_exporter.config import ModuleConfig, TargetConfig
from mail_exporter.exposition import header, sample_lines
from mail_exporter.probes.result import Failure, FailureReason, Phase, ProbeResult, TLSFacts
from mail_exporter.scheduler import TargetState, scheduled_families


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
    probe_families, latency = scheduled_families()
    probe_families.add(state.labels, result, state.failures, state.last_success)
    latency.add_metric(list(state.labels), state.latency.buckets(), state.latency.total)
    families = [family for family in [*probe_families, latency] if family.samples]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    ours = "".join(header(f) + state.rendered[f.name] for f in families)
    assert parsed(ours) == parsed(generate_latest(registry).decode())
    assert 'target="odd \\"name\\"\\\\x"' in ours


def test_sample_lines_of_an_empty_family() -> None:
    probe_families, _ = scheduled_families()
    assert all(sample_lines(family) == "" for family in probe_families)
