"""The presented chain end to end: a real Postfix serving a leaf and an intermediate that
expires in three days, probed by the real exporter process (/metrics) and the real
``mail-exporter probe`` command.

The chain series of this test's /metrics then feed a ``promtool test rules`` case against
the shipped rules: MailCertificateChainExpiring fires, at both severities, for the
intermediate and not for the leaf (whose expiry is MailCertificateExpiring's).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import new_postfix
from tests.promtool import (
    check_metrics,
    check_shipped_alert,
    shipped_annotations,
    shipped_rules,
)
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI, ChainPKI, create_chain_pki
from tests.realservers.postfix import Postfix
from tests.served import Served, get, served_exporter
from tests.test_exposition import labelled

pytestmark = pytest.mark.integration

TARGET = {"target": "mx", "module": "smtp_starttls", "protocol": "smtp"}
SCRAPE_LABELS = {"instance": "127.0.0.1:9469", "job": "mail"}  # what Prometheus attaches
CHAIN_ALERT = "MailCertificateChainExpiring"
EVAL_SECONDS = 1800
DAY = 86400.0


@pytest.fixture(scope="module")
def chain_pki(tmp_path_factory: pytest.TempPathFactory) -> ChainPKI:
    return create_chain_pki(tmp_path_factory.mktemp("chain-pki"))


@pytest.fixture(scope="module")
def chained_postfix(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, chain_pki: ChainPKI, dovecot: Dovecot
) -> Iterator[Postfix]:
    """A Postfix whose smtpd_tls_chain_files name the leaf's key, then leaf + intermediate."""
    chain = dataclasses.replace(
        pki, server_cert=chain_pki.chain_file, server_key=chain_pki.leaf_key
    )
    server = new_postfix(tmp_path_factory, chain, dovecot, name="postfix-chain")
    server.start()
    yield server
    server.stop()


def scraped_once_probed(served: Served) -> str:
    """/metrics once the target's probe has passed (hang guard: about 30 s)."""
    for _ in range(150):
        text = get(served.port, "/metrics").body
        if samples(text, "mail_probe_success", TARGET) == [1.0]:
            return text
        time.sleep(0.2)
    raise AssertionError(f"no passing probe of mx:\n{text}\n{served.stderr()}")


def samples(text: str, name: str, labels: dict[str, str]) -> list[float]:
    """Values of the samples ``name`` whose labels include ``labels``."""
    return [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]


async def test_chain_through_the_exporter(
    tmp_path: Path, chain_pki: ChainPKI, chained_postfix: Postfix
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(f"""\
global: {{interval: 1s}}
modules:
  smtp_starttls:
    protocol: smtp
    tls: starttls
    timeout: 10s
    tls_config: {{ca_file: {chain_pki.root_file}}}
targets:
  - {{name: mx, address: "127.0.0.1:{chained_postfix.smtp_port}", module: smtp_starttls}}
""")
    with served_exporter(tmp_path, config) as served:  # blocking calls: nothing else runs
        text = scraped_once_probed(served)
    leaf, intermediate = chain_pki.leaf, chain_pki.intermediate
    leaf_expiry = leaf.not_valid_after_utc.timestamp()
    intermediate_expiry = intermediate.not_valid_after_utc.timestamp()

    assert sorted(labelled(text, "mail_tls_chain_cert_expiry_timestamp_seconds"), key=str) == [
        (TARGET | {"position": "0", "subject_cn": "localhost"}, leaf_expiry),
        (TARGET | {"position": "1", "subject_cn": "mail_exporter test intermediate"},
         intermediate_expiry),
    ]  # fmt: skip
    assert samples(text, "mail_tls_chain_length", TARGET) == [2.0]
    # The earliest expiry was always the intermediate's; now it says which one.
    assert samples(text, "mail_tls_cert_expiry_timestamp_seconds", TARGET) == [intermediate_expiry]
    assert labelled(text, "mail_tls_cert_info") == [
        (
            TARGET
            | {
                "subject_cn": "localhost",
                "issuer_cn": "mail_exporter test intermediate",
                "serial": format(leaf.serial_number, "x"),
                "sha256_fingerprint": leaf.fingerprint(hashes.SHA256()).hex(),
                "key_type": "ec",
                "signature_algorithm": "ecdsa-with-SHA256",
            },
            1.0,
        )
    ]
    assert samples(text, "mail_tls_cert_key_size", TARGET) == [256.0]
    assert samples(text, "mail_tls_cert_san_entries", TARGET) == [5.0]
    assert samples(text, "mail_tls_cert_name_covered", TARGET) == [1.0]  # 127.0.0.1
    assert samples(text, "mail_tls_cert_verified", TARGET) == [1.0]
    (probed_at,) = samples(text, "mail_probe_last_success_timestamp_seconds", TARGET)
    assert 2.9 * DAY < intermediate_expiry - probed_at <= 3 * DAY
    await check_metrics(text)
    check_chain_alert(text, probed_at, tmp_path)


def check_chain_alert(text: str, probed_at: float, directory: Path) -> None:
    """The shipped alert on the exporter's own chain series, as Prometheus would scrape
    them: promtool's clock starts at 0, so each expiry moves with the probe's time to
    ``EVAL_SECONDS`` (the days left stay those the exporter reported)."""
    chain = labelled(text, "mail_tls_chain_cert_expiry_timestamp_seconds")
    shift = EVAL_SECONDS - probed_at
    series = [
        {
            "series": "mail_tls_chain_cert_expiry_timestamp_seconds{"
            + ",".join(f'{key}="{value}"' for key, value in (labels | SCRAPE_LABELS).items())
            + "}",
            "values": f"{expiry + shift:.0f}x{EVAL_SECONDS // 60 + 10}",
        }
        for labels, expiry in chain
    ]
    (intermediate, days_left), *_ = [
        (labels | SCRAPE_LABELS, (expiry - probed_at) / DAY)
        for labels, expiry in chain
        if labels["position"] == "1"
    ]
    expected = [
        {
            "exp_labels": intermediate | rule["labels"],
            "exp_annotations": shipped_annotations(rule, intermediate, days_left),
        }
        for rule in shipped_rules(CHAIN_ALERT)
    ]
    assert {alert["exp_labels"]["severity"] for alert in expected} == {"warning", "critical"}
    # Quiet at 5m: the alert's for is 10m.
    check_shipped_alert(CHAIN_ALERT, series, "5m", f"{EVAL_SECONDS // 60}m", expected, directory)


def test_probe_command_shows_the_chain(chain_pki: ChainPKI, chained_postfix: Postfix) -> None:
    command = [sys.executable, "-m", "mail_exporter", "probe", "--protocol", "smtp",
               "--tls", "starttls", "--ca-file", str(chain_pki.root_file),
               f"127.0.0.1:{chained_postfix.smtp_port}"]  # fmt: skip
    report = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    expiry = time.strftime(
        "%Y-%m-%d %H:%M:%S UTC", time.gmtime(chain_pki.intermediate.not_valid_after_utc.timestamp())
    )
    chain = report.stdout[report.stdout.index("Chain") : report.stdout.index("Security findings")]
    assert chain.splitlines() == [
        "Chain (2 presented, leaf first; name covered: yes):",
        "  0  localhost",
        "     issuer            mail_exporter test intermediate",
        *chain.splitlines()[3:4],  # the leaf's expiry, checked below
        "     key               ec 256 bits",
        "     signature         ecdsa-with-SHA256",
        f"     serial            {format(chain_pki.leaf.serial_number, 'x')}",
        "  1  mail_exporter test intermediate",
        "     issuer            mail_exporter test root",
        f"     expires           {expiry} (+3.0 days)",
        "     key               ec 256 bits",
        "     signature         ecdsa-with-SHA256",
        f"     serial            {format(chain_pki.intermediate.serial_number, 'x')}",
        "",
    ]
    assert "(+7.0 days)" in chain.splitlines()[3]
    # The intermediate close to expiry is a finding; the leaf's expiry has its own line.
    found = report.stdout[report.stdout.index("Security findings") : report.stdout.index("Session")]
    assert found.splitlines() == [
        "Security findings:",
        "  warning   chain: mail_exporter test intermediate expires in 3 d",
        "",
    ]
