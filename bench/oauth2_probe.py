"""OAuth2 IMAP probe with a kept token against the password IMAP probe, same Dovecot.

Starts the test suite's token server (tests/realservers/oauth.py) and a private Dovecot
whose ``passdb oauth2`` asks it about every token (``force_introspection = yes``), both
on 127.0.0.1, and runs in this process, alternating (the order turning every round):

- **password**: IMAPS, ``mechanism: auto`` (LOGIN), the password from the environment;
- **xoauth2** and **oauthbearer**: IMAPS, AUTHENTICATE with SASL-IR, a client-credentials
  token from the token server (the one source of both), fetched once before the rounds
  and kept by the broker (the run checks that no probe fetched another).

Per probe: wall time, the ``auth`` phase's (the login: token lookup, command, the
server's answer), and the CPU time of this process's main thread (``thread_time``),
where the probe runs: the token server answers Dovecot's introspection requests in a
thread of its own, so its work is not the probe's. The wall time of an OAuth2 login
includes Dovecot's introspection request (an HTTP round trip to the token server per
login), which is the mail server's work, as Microsoft's and Google's servers check
their tokens too; the client's cost is the CPU column. Also timed: ``-n`` lookups of the
kept token in the broker alone.

Target: a kept token adds nothing measurable to the probe: the OAuth2 probes' mean CPU
per probe within 10 % of the password probe's, one token fetch in all.

Run: ``.venv/bin/python bench/oauth2_probe.py`` (n=300 each, about half a minute) or
``--quick`` (n=30). Needs root and dovecot. Exits 1 when the target is missed or a probe
fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    LOOPBACK,
    REPO,
    Children,
    fill_defaults,
    median,
    not_installed,
    percentile,
    print_table,
    run_interruptibly,
    verdict,
)

sys.path.insert(0, str(REPO))
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import Phase, ProbeMemory, run_probe
from mail_exporter.targets import parse_address
from tests.realservers.dovecot import Dovecot
from tests.realservers.oauth import TokenServer
from tests.realservers.pki import PKI, create_pki

PASSWORD_VARIABLE = "MAIL_EXPORTER_BENCH_PASSWORD"
CPU_MARGIN = 0.10
"""How much more CPU per probe an OAuth2 probe may take than the password probe."""


@dataclass
class Timed:
    wall_ms: list[float] = field(default_factory=list)
    auth_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    failed: int = 0

    @property
    def mean_cpu_ms(self) -> float:
        return sum(self.cpu_ms) / len(self.cpu_ms)


def modules(
    pki: PKI, dovecot: Dovecot, secret_file: Path, token_url: str
) -> dict[str, ModuleConfig]:
    settings = {"protocol": "imap", "tls": "implicit", "timeout": "5s",
                "tls_config": {"ca_file": str(pki.ca_file)}}  # fmt: skip
    source = {"client_credentials": {"token_url": token_url, "client_id": "bench",
              "scope": "mail", "client_secret_file": str(secret_file)}}  # fmt: skip
    password = {"username": dovecot.user, "password_env": PASSWORD_VARIABLE}
    return {
        "password": ModuleConfig.model_validate({**settings, "auth": password}),
        **{
            mechanism: ModuleConfig.model_validate(
                {
                    **settings,
                    "auth": {"username": dovecot.user, "mechanism": mechanism, "oauth2": source},
                }  # fmt: skip
            )
            for mechanism in ("xoauth2", "oauthbearer")
        },
    }


async def rounds(
    address: str, kinds: dict[str, ModuleConfig], n: int, warmup: int
) -> tuple[dict[str, Timed], list[float]]:
    """The token fetched, ``warmup`` unmeasured rounds, then ``n`` of each kind, the order
    turning each round; then ``n`` lookups of the kept token alone (microseconds)."""
    auth = kinds["xoauth2"].auth
    assert auth is not None and auth.oauth2 is not None
    memory = ProbeMemory()
    loop = asyncio.get_running_loop()
    await memory.tokens.token(auth.oauth2, loop.time() + 30)
    timed = {name: Timed() for name in kinds}
    target = parse_address(address)
    names = list(kinds)
    for index in range(warmup + n):
        turn = index % len(names)
        for name in names[turn:] + names[:turn]:
            module = kinds[name]
            cpu, wall = time.thread_time(), time.perf_counter()
            result = await run_probe(target, module, module.timeout_seconds, memory)
            if index < warmup:
                continue
            timed[name].wall_ms.append((time.perf_counter() - wall) * 1000)
            timed[name].cpu_ms.append((time.thread_time() - cpu) * 1000)
            timed[name].auth_ms.append(result.phases.get(Phase.AUTH, 0.0) * 1000)
            timed[name].failed += not result.success
    lookups = []
    for _ in range(n):
        started = time.perf_counter()
        await memory.tokens.token(auth.oauth2, loop.time() + 5)
        lookups.append((time.perf_counter() - started) * 1e6)
    return timed, lookups


def report(n: int, timed: dict[str, Timed], fetches: int, lookups: list[float]) -> bool:
    password = timed["password"]
    rows = [("IMAPS probe", "wall median ms", "wall p90 ms", "auth median ms", "CPU median ms",
             "CPU mean ms", "CPU ratio", "failed")]  # fmt: skip
    ok = fetches == 1
    for name, found in timed.items():
        ratio = found.mean_cpu_ms / password.mean_cpu_ms
        rows.append(
            (
                name,
                f"{median(found.wall_ms):.2f}",
                f"{percentile(found.wall_ms, 0.9):.2f}",
                f"{median(found.auth_ms):.2f}",
                f"{median(found.cpu_ms):.2f}",
                f"{found.mean_cpu_ms:.2f}",
                f"{ratio:.3f}",
                str(found.failed),
            )
        )
        ok &= not found.failed and ratio <= 1 + CPU_MARGIN
    print_table(f"password against a kept OAuth2 token, alternating (n={n} each)", rows)
    for name in ("xoauth2", "oauthbearer"):
        wall = median(timed[name].wall_ms) / median(password.wall_ms)
        print(f"  {name}: wall median {wall:.3f} times the password probe's")
    print(f"  token fetches in all: {fetches} (1 expected: the token was kept)")
    print(
        f"  the kept token's lookup alone: median {median(lookups):.1f} µs, "
        f"p90 {percentile(lookups, 0.9):.1f} µs (n={n})"
    )
    return ok


def run_benchmark(args: argparse.Namespace, children: Children, work: Path) -> int:
    pki = create_pki(work / "pki")
    server = TokenServer().start()
    children.on_exit(server.stop)
    dovecot = Dovecot(work / "dovecot", pki.server_cert, pki.server_key, server.introspection_url)
    children.on_exit(dovecot.stop)
    dovecot.start()
    os.environ[PASSWORD_VARIABLE] = dovecot.password
    secret = work / "client.secret"
    secret.write_text("bench-client-secret\n")
    server.add_client("bench", dovecot.user, secret="bench-client-secret")
    kinds = modules(pki, dovecot, secret, server.token_url)
    address = f"{LOOPBACK}:{dovecot.imaps_port}"
    print(f"{args.n} IMAPS probes of each kind, alternating ...", flush=True)
    timed, lookups = asyncio.run(rounds(address, kinds, args.n, args.warmup))
    fetches = int(sum(server.requests.values()))
    ok = report(args.n, timed, fetches, lookups)
    return verdict(ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n=30 with 3 warm-up rounds")
    parser.add_argument("-n", type=int, help="probes of each kind (default 300, 30 with --quick)")
    parser.add_argument("--warmup", type=int, help="unmeasured rounds first (default 10)")
    args = parser.parse_args()
    fill_defaults(args, n=(300, 30), warmup=(10, 3))
    if not_installed("dovecot"):
        return 2
    return run_interruptibly(
        "bench-oauth2-probe-", lambda children, work: run_benchmark(args, children, work)
    )


if __name__ == "__main__":
    sys.exit(main())
