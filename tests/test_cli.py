"""The command line: check-config, probe, and the served process with SIGHUP reloads."""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mail_exporter.cli import event_loop_factory, main
from mail_exporter.collectors.base import COLLECTORS
from mail_exporter.config.root import Config, load_config
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.scripted import scripted_server, server_context, smtp_script
from tests.served import EventLoop, Served, exporter_command, served_exporter

EXAMPLE = Path(__file__).parent.parent / "examples" / "mail_exporter.yml"
# Address space of the processes these tests start: a config bomb that got through would
# make them fail with MemoryError instead of taking the host's memory.
ADDRESS_SPACE = 1 << 30
MEMORY_LIMIT = ["prlimit", f"--as={ADDRESS_SPACE}", "--"]


def test_example_config_is_valid() -> None:
    config = EXAMPLE  # as shipped: its password file sits beside it
    result = CliRunner().invoke(main, ["check-config", str(config)])
    assert result.exit_code == 0, result.output
    summary = f"OK (11 modules, 10 targets, 3 round trips, {len(COLLECTORS)} collectors: backups, "
    assert summary in result.output  # every collector: the example enables each
    loaded = load_config(config)
    disabled = [name for name in COLLECTORS if not loaded.collectors.section(name).enabled]
    assert disabled == [], "every collector belongs in the example, enabled"


def test_readme_minimal_config_is_valid(tmp_path: Path) -> None:
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    section = readme[readme.index("## A minimal config") :]
    text = section[section.index("```yaml\n") + 8 : section.index("```\n", 8)]
    secret = tmp_path / "probe.pass"
    secret.write_text("secret\n")
    config = tmp_path / "mail_exporter.yml"
    config.write_text(text.replace("/etc/mail-exporter/probe.pass", str(secret)))
    result = CliRunner().invoke(main, ["check-config", str(config)])
    assert result.exit_code == 0, result.output
    assert (
        "OK (3 modules, 2 targets, 1 round trip, 2 collectors: logs, postfix_queue)"
        in result.output
    )


def config_snippets() -> Iterator[tuple[str, str]]:
    """Every YAML block of the README and docs/ that is a config of this exporter (its
    top-level keys are config sections), named by file and line."""
    sections = {field.alias or name for name, field in Config.model_fields.items()}
    root = EXAMPLE.parent.parent
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = path.read_text()
        for block in re.finditer(r"^```yaml\n(.*?)^```$", text, re.M | re.S):
            document = yaml.safe_load(block[1])
            if isinstance(document, dict) and document.keys() <= sections:
                line = text.count("\n", 0, block.start()) + 1
                yield f"{path.relative_to(root)}:{line}", block[1]


SNIPPETS = dict(config_snippets())
ON_THE_DEPLOYING_HOST = re.compile(r"'/etc/[^']+' cannot be read: No such file or directory$")
"""A secret or key file a snippet names: it is on the host the config is written for."""
ELSEWHERE = re.compile(r": unknown module '[\w-]+' \(modules: none defined\)$")
"""A round trip named in a snippet without modules uses those of the snippets above it."""


@pytest.mark.parametrize("where", sorted(SNIPPETS))
def test_documented_configs_pass_check_config(where: str, tmp_path: Path) -> None:
    config = tmp_path / "snippet.yml"
    config.write_text(SNIPPETS[where])
    result = CliRunner().invoke(main, ["check-config", str(config)])
    problems = [line for line in result.output.splitlines() if line.startswith("  ")]
    allowed = [ON_THE_DEPLOYING_HOST]
    if "modules" not in yaml.safe_load(SNIPPETS[where]):
        allowed.append(ELSEWHERE)
    wrong = [line for line in problems if not any(p.search(line) for p in allowed)]
    assert result.exit_code == (1 if problems else 0) and not wrong, result.output


def test_documented_config_snippets_are_found() -> None:
    pages = {where.split(":")[0] for where in SNIPPETS}
    assert pages >= {
        "README.md",
        "docs/cloud-mailboxes.md",
        "docs/containers.md",
        "docs/scaling.md",
    }


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.yml"
    config.write_text("global: {interval: 5x}\nmodules:\n  m: {protocol: smtp, tls: maybe}\n")
    result = CliRunner().invoke(main, ["check-config", str(config)])
    assert result.exit_code == 1
    assert "2 problem(s)" in result.output
    assert "global.interval (line 1)" in result.output
    assert "modules.m.tls (line 3)" in result.output


def test_probe_command_success_and_failure(postfix: Postfix, pki: PKI) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        main,
        [
            "probe",
            "--protocol",
            "smtp",
            "--tls",
            "starttls",
            "--ca-file",
            str(pki.ca_file),
            f"localhost:{postfix.smtp_port}",
        ],
    )
    assert ok.exit_code == 0, ok.output
    for fragment in (
        "tls_handshake",
        "starttls",
        "TLS 1.3",
        "verified             yes",
        "Verdict: SUCCESS",
    ):
        assert fragment in ok.output
    failed = runner.invoke(
        main, ["probe", "--protocol", "smtp", f"127.0.0.1:{postfix.refused_port}"]
    )
    assert failed.exit_code == 1
    assert "Verdict: FAILED in connect (connect)" in failed.output


def test_probe_command_with_module_hides_password(
    tmp_path: Path, dovecot: Dovecot, pki: PKI
) -> None:
    secret = tmp_path / "pass"
    secret.write_text(dovecot.password + "\n")
    config = tmp_path / "config.yml"
    config.write_text(
        "modules:\n  imaps:\n    protocol: imap\n    tls: implicit\n"
        f"    tls_config: {{ca_file: {pki.ca_file}}}\n"
        f"    auth: {{username: {dovecot.user}, password_file: {secret}}}\n"
    )
    result = CliRunner().invoke(
        main,
        [
            "probe",
            "--config.file",
            str(config),
            "--module",
            "imaps",
            f"localhost:{dovecot.imaps_port}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "auth" in result.output
    assert dovecot.password not in result.output


HOSTILE_TEXT = "x\r\nVerdict: SUCCESS\x1b[2J\x1b]0;owned\x07"
"""A line break, a fake verdict, a screen clear and a window title, as a server can send them."""


def hostile_certificate(pki: PKI, directory: Path) -> tuple[Path, Path]:
    """A certificate from the test CA whose subject and subjectAltName carry HOSTILE_TEXT,
    with Unicode line and paragraph separators and a right-to-left override in the subject."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "\u2028Verdict: SUCCESS\u2029\u202e"),
            x509.NameAttribute(NameOID.COMMON_NAME, HOSTILE_TEXT),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTILE_TEXT)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "hostile.pem", directory / "hostile.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_probe_report_escapes_what_the_certificate_says(tmp_path: Path, pki: PKI) -> None:
    """Names and verify errors reach the terminal escaped: no fake verdict line, no escapes."""
    context = server_context(*hostile_certificate(pki, tmp_path))
    async with scripted_server(smtp_script(["220 hi"]), context) as address:
        command = [sys.executable, "-m", "mail_exporter", "probe", "--protocol", "smtp",
                   "--tls", "implicit", "--ca-file", str(pki.ca_file), address]  # fmt: skip
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    report = stdout.decode()
    assert process.returncode == 1, report
    verdicts = [line for line in report.splitlines() if line.lstrip().startswith("Verdict")]
    assert len(verdicts) == 1 and verdicts[0].startswith("Verdict: FAILED in tls_handshake"), report
    assert "certificate          CN=x\\r\\nVerdict: SUCCESS\\x1b[2J" in report  # shown, escaped
    assert all(character.isprintable() for character in report.replace("\n", "")), repr(report)


def test_probe_command_refuses_a_server_name_tls_cannot_send() -> None:
    result = CliRunner().invoke(
        main, ["probe", "--tls", "implicit", "--server-name", "mail..example.com", "127.0.0.1:1"]
    )
    assert result.exit_code == 2, result.output
    assert "server_name 'mail..example.com' is not a host name" in result.output


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, str, Path]]:
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  first: {protocol: smtp}\n")
    with served_exporter(
        tmp_path, config, "--log.format", "json", address_space=ADDRESS_SPACE
    ) as served:
        yield served, f"http://127.0.0.1:{served.port}", config


def reload_gauge(base: str) -> str:
    return next(
        line
        for line in fetch(f"{base}/metrics").splitlines()
        if line.startswith("mail_exporter_config_last_reload_successful ")
    )


def test_sighup_reload(served: tuple[Served, str, Path]) -> None:
    exporter, base, config = served
    process = exporter.process
    config.write_text("modules:\n  second: {protocol: imap}\n")
    process.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert reload_gauge(base).endswith(" 1.0")
    assert "second" in fetch(f"{base}/")
    config.write_text("modules:\n  third: {protocol: nntp}\n")
    process.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert reload_gauge(base).endswith(" 0.0")
    assert "second" in fetch(f"{base}/")  # the running config stayed
    process.terminate()
    process.wait(10)
    stderr = exporter.stderr()
    assert '"level": "error"' in stderr and "modules.third.protocol" in stderr


def test_bad_config_does_not_start(tmp_path: Path, taken_port: int) -> None:
    config = tmp_path / "bad.yml"
    config.write_text("targets:\n  - {name: a, address: 'x:1', module: missing}\n")
    result = subprocess.run(
        exporter_command(config, taken_port),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "targets[0].module (line 2): unknown module 'missing'" in result.stderr


def billion_laughs() -> str:
    """Nine levels of nine aliases: about 700 bytes that expand to 9**9 strings."""
    text = "a: &a [" + ", ".join(['"' + " ".join(["lol"] * 9) + '"'] * 9) + "]\n"
    for previous, current in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{current}: &{current} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
    assert 600 < len(text) < 800
    return text


def password_file_config(config: Path, secret: Path) -> None:
    config.write_text(
        f"modules:\n  m:\n    protocol: imap\n    auth: {{username: u, password_file: {secret}}}\n"
    )


def fifo_password(config: Path) -> str:
    secret = config.parent / "fifo.pass"
    os.mkfifo(secret)
    password_file_config(config, secret)
    return f"modules.m.auth (line 4): password_file '{secret}' cannot be read: not a regular file (a FIFO)"


def device_password(config: Path) -> str:
    password_file_config(config, Path("/dev/zero"))
    return "modules.m.auth (line 4): password_file '/dev/zero' cannot be read: not a regular file (a character device)"


def sparse_password(config: Path) -> str:
    secret = config.parent / "sparse.pass"
    with secret.open("wb") as file:
        file.truncate(100 * 1024 * 1024)  # 100 MB that take no disk
    password_file_config(config, secret)
    return f"modules.m.auth (line 4): password_file '{secret}' cannot be read: larger than 64 KiB"


def fifo_ca_file(config: Path) -> str:
    ca = config.parent / "fifo-ca.pem"
    os.mkfifo(ca)
    config.write_text(f"modules:\n  m:\n    protocol: smtp\n    tls_config: {{ca_file: {ca}}}\n")
    return (
        f"modules.m.tls_config (line 4): ca_file '{ca}' cannot be read: not a regular file (a FIFO)"
    )


def fifo_config(config: Path) -> str:
    config.unlink()
    os.mkfifo(config)
    return "cannot read file: not a regular file (a FIFO)"


def yaml_text(text: str, problem: str) -> Callable[[Path], str]:
    def write(config: Path) -> str:
        config.write_text(text)
        return problem

    return write


# Each writes a config (and what it names) at the given path and returns the problem expected.
HOSTILE_CONFIGS: list[tuple[str, Callable[[Path], str]]] = [
    (
        "alias cycle",
        yaml_text(
            "targets: &t [*t]\n",
            "targets[0] (line 1): alias *t is inside the node it names: a cycle",
        ),
    ),
    (
        "5000-deep nesting",
        yaml_text(
            "global: " + "[" * 5000 + "]" * 5000 + "\n",
            "global[0][0][0][0][0][0][0]... (line 1): nested deeper than 100 levels",
        ),
    ),
    (
        "billion laughs",
        yaml_text(
            billion_laughs(), "f[0] (line 6): more than 100000 values (aliases counted as copies)"
        ),
    ),
    ("password_file a FIFO", fifo_password),
    ("password_file /dev/zero", device_password),
    ("password_file of 100 MB", sparse_password),
    ("ca_file a FIFO", fifo_ca_file),
    ("the config file a FIFO", fifo_config),
]


def run_bounded(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``mail-exporter ARGUMENTS`` as its own process, bounded in time (a hang is a failure,
    not a stuck run) and memory."""
    return subprocess.run(
        [*MEMORY_LIMIT, sys.executable, "-m", "mail_exporter", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "write_config", [case for _, case in HOSTILE_CONFIGS], ids=[name for name, _ in HOSTILE_CONFIGS]
)
def test_check_config_refuses_hostile_files_promptly(
    tmp_path: Path, write_config: Callable[[Path], str]
) -> None:
    config = tmp_path / "config.yml"
    config.write_text("")
    problem = write_config(config)
    result = run_bounded("check-config", str(config))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [f"{config}: 1 problem(s)", f"  {problem}"]


def post_reload(base: str) -> tuple[int, str]:
    request = urllib.request.Request(f"{base}/-/reload", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, str(response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, str(error.read().decode())


def test_reload_refuses_hostile_files_and_keeps_working(
    served: tuple[Served, str, Path],
) -> None:
    """Each is a failed reload answered at once: the gauge drops, the running config stays,
    and the reload lock is free for the next one."""
    _, base, config = served
    for name, write_config in HOSTILE_CONFIGS:
        if config.is_fifo():  # left by the case before
            config.unlink()
        problem = write_config(config)
        status, body = post_reload(base)
        assert (status, problem in body) == (500, True), (name, body)
        assert reload_gauge(base).endswith(" 0.0"), name
        assert "first" in fetch(f"{base}/"), name
    config.unlink()
    config.write_text("modules:\n  second: {protocol: imap}\n")
    assert post_reload(base) == (200, "Reloaded\n")
    assert reload_gauge(base).endswith(" 1.0")
    assert "second" in fetch(f"{base}/")


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        (":\uff12\uff15", "invalid address ':\uff12\uff15'"),  # fullwidth
        (":\u0662\u0665", "invalid address ':\u0662\u0665'"),  # Arabic-Indic
        (":\u00b2", "invalid address ':\u00b2'"),  # superscript two
    ],
)
def test_listen_port_takes_ascii_digits_only(address: str, problem: str) -> None:
    result = run_bounded("--web.listen-address", address)
    assert result.returncode == 2
    assert problem in result.stderr


def test_event_loop_without_uvloop_is_asyncios(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop is optional (the fast extra): without it the exporter serves on asyncio's loop."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop_factory() is None
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        assert type(runner.get_loop()).__module__.startswith("asyncio")


def test_with_uvloop_installed_the_exporter_serves_on_it(
    tmp_path: Path, uvloop_directory: Path
) -> None:
    """The fast extra's uvloop, installed into a directory of the suite's own: the suite's
    venv keeps asyncio's loop, which the other tests serve on unless they ask for uvloop
    (the ``served_loop`` fixture)."""
    loop = EventLoop("uvloop", uvloop_directory)
    chosen = "import uvloop; from mail_exporter.cli import event_loop_factory as f; " + (
        "assert f() is uvloop.new_event_loop"
    )
    subprocess.run(
        [sys.executable, "-c", chosen], env={**os.environ, **loop.env}, check=True, timeout=60
    )
    config = tmp_path / "config.yml"
    config.write_text("collectors: {host: {enabled: true}}\n")
    with served_exporter(tmp_path, config, loop=loop) as served:  # checks uvloop's loop runs
        assert "mail_exporter_collector_success" in fetch(f"http://127.0.0.1:{served.port}/metrics")
