"""Revocation checks, and the whole security posture scan: what they add to a STARTTLS probe,
on loopback.

A private Postfix from tests/realservers (with the Dovecot its config logs in through)
presents leaves of the revocation test CA (tests/realservers/pki.py); the test suite's
loopback HTTP server serves the CRLs and answers each OCSP POST with
``openssl ocsp -reqin`` (whose process start is most of a fresh OCSP answer). The probes
run in this process, one of each case per round, the order turning every round:

- ``off``: the module without revocation, the baseline;
- ``kept``: CRL and OCSP with the answers kept from an earlier probe, as every probe
  but the first sees them until the answers' nextUpdate;
- ``fresh``: CRL and OCSP with nothing kept: a CRL fetch and an OCSP request;
- ``fresh, large CRL``: the same with a CRL of 100,000 entries (about 3.3 MB, made by
  ``openssl ca -gencrl``), parsed, verified and searched in a worker thread;
- ``full posture, fresh``: everything a module can check at once, nothing kept: the TLS
  scan (four versions and the weak cipher classes this host can offer), CRL, OCSP and
  stapling (one more handshake: Postfix staples nothing), the open-relay and the VRFY/EXPN
  checks.

For each: the median and 90th percentile of the probe's wall time (run_probe, with the
checks), the probe's own duration (the conversation, which the checks must leave alone),
and what the checks add: the median of wall time minus duration (closing the connection,
then the checks) over that of ``off`` (closing alone), so that the server's own spread
stays out of it. Targets: kept answers add under 5 ms; a fresh check with the
large CRL stays under 0.5 s; the full posture scan of one server under 1 s.

    .venv/bin/python bench/revocation.py            # 100 rounds, about 30 s
    .venv/bin/python bench/revocation.py --quick    # 15 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Children,
    machine_line,
    median,
    not_installed,
    percentile,
    print_table,
    run_interruptibly,
    starttls_module,
)
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import ProbeMemory, ProbeResult, RevocationCache, run_probe
from mail_exporter.probes.revocation import RevocationMethod
from mail_exporter.targets import parse_address
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import RevocableLeaf, create_revocation_pki, openssl_crl
from tests.realservers.revocation import ChainPostfix, Document, Responder, RevocationHTTPServer

LARGE_CRL_ENTRIES = 100_000
KEPT_TARGET_MS = 5.0
FRESH_LARGE_TARGET_MS = 500.0
FULL_POSTURE_TARGET_MS = 1000.0


@dataclass
class Case:
    name: str
    port: int
    module: ModuleConfig
    cache: Callable[[], RevocationCache]
    walls: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)


def module(root: Path, checked: bool, **more: object) -> ModuleConfig:
    """An smtp/starttls module; ``more`` adds keys or replaces them (``revocation``)."""
    settings = {"timeout": "10s", "revocation": {"crl": checked, "ocsp": checked}} | more
    return starttls_module(root, **settings)


FULL_POSTURE_CHECKS: dict[str, object] = {
    "tls_scan": True,
    "revocation": {"crl": True, "ocsp": True, "stapling": True},  # replaces module()'s
    "smtp": {
        "relay_check": {"mail_from": "probe@outside.example", "rcpt_to": "b@elsewhere.example"},
        "enumeration_check": {"address": "postmaster@localhost"},
    },
}


def large_crl(directory: Path, index: Path, intermediate: Path, key: Path) -> bytes:
    """The intermediate's CRL with LARGE_CRL_ENTRIES more revoked serials than ``index``."""
    directory.mkdir()
    revoked = "".join(
        f"R\t300101000000Z\t250101000000Z,keyCompromise\t{secrets.token_hex(16).upper()}"
        f"\tunknown\t/CN=revoked {n}\n"
        for n in range(LARGE_CRL_ENTRIES)
    )
    (directory / "index.txt").write_text(index.read_text() + revoked)
    return openssl_crl(directory, intermediate, key).read_bytes()


def answered(result: ProbeResult) -> bool:
    """Every check the module asked for gave an answer (Postfix staples nothing: its
    stapling check asks, and "no stapled response" is its answer)."""
    revocation, scan = result.revocation, result.tls_scan
    asked = [] if revocation is None else revocation.answers
    return all(
        a.revoked is not None for a in asked if a.method is not RevocationMethod.STAPLING
    ) and (scan is None or scan.success)


async def measure(cases: list[Case], rounds: int) -> str | None:
    """Run the rounds; the first failure or unanswered check, if any."""
    for case in cases:  # a first probe of each: connections, imports, the kept answers
        await run_probe(
            parse_address(f"127.0.0.1:{case.port}"),
            case.module,
            10,
            ProbeMemory(revocation=case.cache()),
        )
    for number in range(rounds):
        turn = number % len(cases)
        for case in cases[turn:] + cases[:turn]:
            address = parse_address(f"127.0.0.1:{case.port}")
            started = time.perf_counter()
            result = await run_probe(address, case.module, 10, ProbeMemory(revocation=case.cache()))
            case.walls.append(time.perf_counter() - started)
            case.durations.append(result.duration_seconds)
            if not result.success or not answered(result):
                return f"{case.name}: " + "\n".join(result.log)
    return None


def run(children: Children, work: Path, rounds: int) -> int:
    http = RevocationHTTPServer(work)
    children.on_exit(http.stop)
    leaves = {
        "small": RevocableLeaf(http.url("/ca.crl"), http.url("/ocsp")),
        "large": RevocableLeaf(http.url("/large.crl"), http.url("/ocsp")),
    }
    pki = create_revocation_pki(work / "pki", leaves)
    crl = large_crl(work / "large", pki.index, pki.intermediate, pki.intermediate_key)
    http.routes = {
        "/ca.crl": Document(pki.crl.read_bytes()),
        "/large.crl": Document(crl),
        "/ocsp": Responder(pki.index, pki.intermediate, pki.responder_cert, pki.responder_key),
    }
    http.start()
    dovecot = Dovecot(work / "dovecot", pki.leaves["small"].chain, pki.leaves["small"].key)
    children.on_exit(dovecot.stop)
    dovecot.start()
    chains = {name: (files.key, files.chain) for name, files in pki.leaves.items()}
    postfix = ChainPostfix(work / "postfix", chains, dovecot.auth_port, dovecot.lmtp_port)
    children.on_exit(postfix.stop)
    postfix.start()

    kept = RevocationCache()
    small, large = postfix.chain_ports["small"], postfix.chain_ports["large"]
    off, on = module(pki.root, False), module(pki.root, True)
    cases = [
        Case("off", small, off, RevocationCache),
        Case("kept", small, on, lambda: kept),
        Case("fresh", small, on, RevocationCache),
        Case(f"fresh, large CRL ({len(crl) / 1e6:.1f} MB)", large, on, RevocationCache),
        Case(
            "full posture, fresh",
            small,
            module(pki.root, True, **FULL_POSTURE_CHECKS),
            RevocationCache,
        ),
    ]
    failure = asyncio.run(measure(cases, rounds))
    if failure is not None:
        print(f"a probe failed or a check did not answer: {failure}", file=sys.stderr)
        return 1

    def after(case: Case) -> float:
        """Median time after the conversation: closing the connection, then the checks."""
        return median([w - d for w, d in zip(case.walls, case.durations, strict=True)])

    baseline = after(cases[0])
    rows = [("case", "median ms", "p90 ms", "checks add ms", "probe duration ms")]
    for case in cases:
        rows.append(
            (
                case.name,
                f"{median(case.walls) * 1000:.1f}",
                f"{percentile(case.walls, 0.9) * 1000:.1f}",
                f"{(after(case) - baseline) * 1000:.1f}",
                f"{median(case.durations) * 1000:.1f}",
            )
        )
    print(machine_line())
    print_table(f"STARTTLS probe with revocation checks, {rounds} rounds", rows)
    kept_ms = (after(cases[1]) - baseline) * 1000
    large_ms = median(cases[3].walls) * 1000
    full_ms = percentile(cases[4].walls, 0.9) * 1000
    missed = (
        kept_ms >= KEPT_TARGET_MS
        or large_ms >= FRESH_LARGE_TARGET_MS
        or full_ms >= FULL_POSTURE_TARGET_MS
    )
    print(
        f"\nkept answers add {kept_ms:.1f} ms (target < {KEPT_TARGET_MS:.0f}); a fresh check "
        f"with the large CRL takes {large_ms:.0f} ms (target < {FRESH_LARGE_TARGET_MS:.0f}); "
        f"the full posture scan {full_ms:.0f} ms at the 90th percentile (target < "
        f"{FULL_POSTURE_TARGET_MS:.0f}): " + ("MISSED" if missed else "met")
    )
    return 1 if missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 rounds instead of 100")
    rounds = 15 if parser.parse_args().quick else 100
    if not_installed("postfix", "dovecot", "openssl"):
        return 1
    return run_interruptibly("revocation-", lambda children, work: run(children, work, rounds))


if __name__ == "__main__":
    sys.exit(main())
