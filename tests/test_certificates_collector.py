"""The certificates collector over real PEM files: a certificate, a chain whose
intermediate expires first, a key-only file, a missing file and garbage."""

from __future__ import annotations

from pathlib import Path

from mail_exporter.collectors.certificates import CertificatesCollector
from tests.realservers.pki import PKI, create_chain_pki


def samples(collector: CertificatesCollector) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels["path"]): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def test_each_file_reports_its_earliest_expiry_or_that_it_cannot_be_read(
    tmp_path: Path, pki: PKI
) -> None:
    chain = create_chain_pki(tmp_path / "chain")
    bundle = tmp_path / "bundle.pem"  # key first, then leaf and intermediate, as Postfix takes it
    bundle.write_bytes(chain.leaf_key.read_bytes() + chain.chain_file.read_bytes())
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "missing.pem"
    files = [pki.server_cert, bundle, pki.server_key, missing, garbage]
    found = samples(CertificatesCollector(files))

    expiry = "mail_tls_cert_file_expiry_timestamp_seconds"
    assert found[(expiry, str(pki.server_cert))] == pki.server_not_after.timestamp()
    assert found[("mail_tls_cert_file_not_before_timestamp_seconds", str(pki.server_cert))] == (
        pki.server_not_before.timestamp()
    )
    assert found[(expiry, str(bundle))] == chain.intermediate.not_valid_after_utc.timestamp()
    readable = {path: found[("mail_tls_cert_file_readable", str(path))] for path in files}
    assert readable == {pki.server_cert: 1, bundle: 1, pki.server_key: 0, missing: 0, garbage: 0}
    assert not {key for key in found if key[0] == expiry} - {(expiry, str(pki.server_cert)),
                                                            (expiry, str(bundle))}  # fmt: skip
