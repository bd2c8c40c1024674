"""/metrics put together from parts compressed once: one gzip member any client reads, with
the same samples as the text rendered whole, and only the parts that changed compressed
again; a plain scrape streamed in chunks with the same samples."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from mail_exporter import gzip_body, web
from mail_exporter import scheduler as scheduler_module
from mail_exporter.exporter import Exporter
from mail_exporter.exposition import RenderedFamily, registry_parts
from mail_exporter.gzip_body import Part, _combine_in_python, compress, gzip_member
from mail_exporter.scheduler import _HEADERS
from tests.promtool import check_metrics
from tests.realservers.programs import served_prometheus
from tests.scripted import scripted_server, silent, smtp_script
from tests.served import get, served_exporter

TARGETS = 24


def texts(seed: int) -> list[bytes]:
    """Texts of many sizes (empty ones too), some compressible, some not."""
    rng = random.Random(seed)
    return [
        rng.randbytes(rng.randrange(0, 3000))
        if rng.random() < 0.3
        else b"".join(
            rng.choice([b"mail_probe_success 1.0\n", b"# HELP x y\n", b"\n"])
            for _ in range(rng.randrange(0, 2000))
        )  # fmt: skip
        for _ in range(40)
    ]


@pytest.mark.parametrize("combine", [gzip_body.crc32_combine, _combine_in_python])
def test_parts_make_one_gzip_member_that_every_decoder_reads(combine: object) -> None:
    parts = texts(21)
    member = gzip_member([compress(text) for text in parts], combine)  # type: ignore[arg-type]
    whole = b"".join(parts)
    assert zlib.decompress(member, 16 + zlib.MAX_WBITS) == whole
    assert gzip.decompress(member) == whole
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)  # one member: nothing after it
    assert decoder.decompress(member) == whole and decoder.eof and not decoder.unused_data
    gunzip = shutil.which("gzip")
    if gunzip:
        done = subprocess.run([gunzip, "-dc"], input=member, capture_output=True, check=True)
        assert done.stdout == whole
    assert zlib.decompress(gzip_member([], combine), 16 + zlib.MAX_WBITS) == b""  # type: ignore[arg-type]


def test_the_crc_combination_in_python_is_zlibs() -> None:
    assert gzip_body.crc32_combine is not _combine_in_python  # libz.so.1 is there to compare
    rng = random.Random(6)
    for _ in range(200):
        first, second = rng.randbytes(rng.randrange(0, 500)), rng.randbytes(rng.randrange(0, 70000))
        crc1, crc2 = zlib.crc32(first), zlib.crc32(second)
        expected = zlib.crc32(first + second)
        assert gzip_body.crc32_combine(crc1, crc2, len(second)) == expected
        assert _combine_in_python(crc1, crc2, len(second)) == expected


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by name and labels (a family's order left out)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in found, f"{key} twice"
            found[key] = sample.value
    return found


def headers(text: str) -> list[str]:
    """The HELP and TYPE lines, in order: each family's once, before its samples."""
    return [line for line in text.splitlines() if line.startswith("#")]


def whole_text(exporter: Exporter) -> str:
    """The exposition rendered whole, as /metrics wrote it before it came in parts: the
    registry, then each family's lines of every target in config order."""
    rows = [state.rendered for state in exporter.scheduler.states.values() if state.rendered]
    text = generate_latest(exporter.registry)
    for family, (_, header) in enumerate(_HEADERS):
        body = b"".join(row[family] for row in rows)
        if body:
            text += header + body
    return text.decode()


@pytest.fixture
async def exporter(tmp_path: Path) -> AsyncIterator[Exporter]:
    """Scheduled SMTP targets, half answering and half silent, probed every second."""
    answering = scripted_server(smtp_script(["220 mx ESMTP"], ["250-mx", "250 SIZE 100"]))
    async with answering as mx, scripted_server(silent) as hanging:
        targets = "".join(
            f'  - {{name: "t{n}", address: "{mx if n % 2 else hanging}", module: quick}}\n'
            for n in range(TARGETS)
        )
        config = tmp_path / "config.yml"
        config.write_text(
            "global: {interval: 1s}\nmodules:\n  quick: {protocol: smtp, timeout: 100ms}\n"
            f"targets:\n{targets}"
        )
        running = Exporter(config, {})
        running.start()
        try:
            for _ in range(100):
                if all(state.result is not None for state in running.scheduler.states.values()):
                    break
                await asyncio.sleep(0.1)
            yield running
        finally:
            running.stop()


async def test_gzipped_and_plain_scrapes_say_what_the_whole_text_says(
    exporter: Exporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On real probe results: the gzipped body and the plain chunks have the samples of
    the text rendered whole, each family once with its header, and promtool takes them."""
    exporter.stop()  # the results stay as they are while the bodies are compared
    scheduler = exporter.scheduler
    monkeypatch.setattr(scheduler_module, "TARGETS_PER_BUCKET", 3)  # 8 buckets
    for n, state in enumerate(scheduler.states.values()):
        state.phase = (n % 5) / 8  # spread over the buckets, several in some, none in others
    expected = whole_text(exporter)
    gzipped = gzip.decompress(web._gzipped_body(exporter)).decode()
    registry_text = b"".join(text for text, _ in registry_parts(exporter.registry))
    plain = (registry_text + b"".join(web._chunks(scheduler.render()))).decode()
    for text in (gzipped, plain):
        assert samples(text) == samples(expected)
        assert headers(text) == headers(expected)
        assert text.encode().count(b"\n") == expected.encode().count(b"\n")
    assert 'mail_probe_success{target="t1",module="quick",protocol="smtp"} 1.0' in gzipped
    assert 'mail_probe_success{target="t0",module="quick",protocol="smtp"} 0.0' in gzipped
    await check_metrics(gzipped)


def unpacked(parts: list[Part]) -> bytes:
    return zlib.decompress(gzip_member(parts), 16 + zlib.MAX_WBITS)


async def test_only_buckets_with_new_results_are_compressed_again(
    exporter: Exporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter.stop()
    scheduler = exporter.scheduler
    states = list(scheduler.states.values())
    monkeypatch.setattr(scheduler_module, "TARGETS_PER_BUCKET", 6)  # 4 buckets
    for n, state in enumerate(states):
        state.phase = (n % 4) / 4
    first = scheduler.compressed()
    again = scheduler.compressed()
    assert all(a is b for a, b in zip(first, again, strict=True))  # nothing compressed again
    # Target 0 (bucket 0) gets target 1's result: it now passes; buckets 1-3 are untouched.
    states[0].record(states[1].result)  # type: ignore[arg-type]
    third = scheduler.compressed()
    reused = {id(part) for part in first}
    renewed = [part for part in third if id(part) not in reused]
    assert renewed and len(renewed) < len(third) / 2
    text = unpacked(third).decode()
    assert 'mail_probe_success{target="t0",module="quick",protocol="smtp"} 1.0' in text
    registry_text = b"".join(text for text, _ in registry_parts(exporter.registry))
    assert gzip.decompress(web._gzipped_body(exporter)) == registry_text + unpacked(third)
    assert samples((registry_text + unpacked(third)).decode()) == samples(whole_text(exporter))
    # A target moving to another bucket leaves the old one: it is in the body once.
    states[0].phase = 0.8
    moved = unpacked(scheduler.compressed()).decode()
    assert moved.count('mail_probe_success{target="t0",') == 1


async def test_scrapes_over_http_gzipped_and_streamed(exporter: Exporter) -> None:
    """Through the real server: gzip as Prometheus asks for it, and the plain text sent in
    chunks (Transfer-Encoding: chunked), never joined whole."""
    client: TestClient[object, object] = TestClient(TestServer(web.make_app(exporter)))
    await client.start_server()
    try:
        exporter.stop()
        packed = await client.get(
            "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        )
        assert packed.headers["Content-Encoding"] == "gzip"
        gzipped = gzip.decompress(await packed.read()).decode()
        plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
        assert plain.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Encoding" not in plain.headers
        text = await plain.text()
        curl = shutil.which("curl")
        if curl:  # another decoder: curl's, through libcurl's gzip
            done = await asyncio.to_thread(
                subprocess.run,
                [curl, "-sSf", "--compressed", str(client.make_url("/metrics"))],
                capture_output=True,
                check=True,
            )
            assert samples(done.stdout.decode()).keys() == samples(gzipped).keys()
    finally:
        await client.close()
    without_self = {
        key: value
        for key, value in samples(text).items()
        if not key[0].startswith(("mail_exporter_collector_duration", "process_"))
    }
    assert without_self.items() <= samples(gzipped).items()
    assert samples(text).keys() == samples(gzipped).keys()


def test_plain_chunks_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain scrape never holds much more than a chunk of the probe results at once."""
    pieces = [b"x" * 1000 + str(n).encode() + b"\n" for n in range(300)]
    monkeypatch.setattr(web, "PLAIN_CHUNK", 10_000)
    chunks = list(web._chunks(pieces))
    assert len(chunks) > 20 and all(len(chunk) < 10_000 + 1010 for chunk in chunks)
    assert b"".join(chunks) == b"".join(pieces)


class _Registry:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def gauge(name: str, values: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, f"{name} help.", labels=["domain"])
    for label, value in values.items():
        family.add_metric([label], value)
    return family


def test_rendered_families_are_served_as_they_were_written() -> None:
    rendered = RenderedFamily(gauge("mail_dns_b", {"x.test": 1.0, 'q"uote\\.test': 2.0}))
    families: list[Metric] = [
        gauge("mail_dns_a", {"a.test": 0.0}),
        rendered,
        gauge("mail_dns_c", {}),
    ]
    registry = _Registry(families)
    parts = list(registry_parts(registry))
    assert b"".join(text for text, _ in parts) == generate_latest(registry)  # type: ignore[arg-type]
    assert [part for _, part in parts] == [None, rendered.part, None]
    assert rendered.text == generate_latest(_Registry([rendered]))  # type: ignore[arg-type]
    # Samples given a list of their own (as a merge does) are written, not the old text.
    merged = RenderedFamily(gauge("mail_dns_b", {"x.test": 1.0}))
    merged.samples = [*merged.samples, *gauge("mail_dns_b", {"y.test": 3.0}).samples]
    parts = list(registry_parts(_Registry([merged])))
    assert parts[0][1] is None and b'domain="y.test"' in parts[0][0]


def test_prometheus_reads_the_gzipped_body(tmp_path: Path) -> None:
    """The real Prometheus scrapes the exporter as it always does (asking for gzip) and
    stores every sample of the body put together from parts."""
    targets = "".join(
        f'  - {{name: "t{n}", address: "127.0.0.1:{n + 1}", module: quick}}\n' for n in range(40)
    )
    config = tmp_path / "exporter.yml"
    config.write_text(
        "global: {interval: 1s}\nmodules:\n  quick: {protocol: smtp, timeout: 500ms}\n"
        f"targets:\n{targets}"
    )
    with served_exporter(tmp_path, config) as exporter:
        prometheus_config = tmp_path / "prometheus.yml"
        prometheus_config.write_text(
            "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: mail\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n"
        )
        with served_prometheus(tmp_path, prometheus_config) as prometheus:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                scraped = query(prometheus.port, 'scrape_samples_scraped{job="mail"}')
                targets_seen = query(prometheus.port, "count(mail_probe_success)")
                if scraped and targets_seen == 40.0:
                    break
                time.sleep(0.5)
            assert query(prometheus.port, 'up{job="mail"}') == 1.0
            assert targets_seen == 40.0
            body = get(exporter.port, "/metrics").body
            assert scraped == len(samples(body))  # the sample count does not change between


def query(port: int, expression: str) -> float | None:
    """The one value of an instant query, None when it has none."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.load(response)["data"]["result"]
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None
