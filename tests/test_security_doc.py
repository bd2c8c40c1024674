"""docs/security.md's way to secure the endpoints, followed as written: its openssl commands
make a CA and a server certificate the exporter serves and a client verifies, and
check-web-config says before a reload that turning TLS on takes a restart."""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path

from click.testing import CliRunner

from mail_exporter.cli import main
from tests.served import get, served_exporter

GUIDE = Path(__file__).parent.parent / "docs" / "security.md"


def openssl_block() -> str:
    guide = GUIDE.read_text()
    block = guide[guide.index("```sh\ncd /etc/mail-exporter/tls") + 6 :]
    return block[: block.index("```")]


def make_certificates(directory: Path) -> Path:
    """The guide's commands, run as written but in ``directory``, without giving the key
    to a user this machine may not have; the directory, holding them."""
    directory.mkdir(exist_ok=True)
    script = openssl_block().replace("/etc/mail-exporter/tls", str(directory))
    script = re.sub(r"(?m)^chown mail-exporter server.key && ", "", script)
    subprocess.run(["sh", "-e", "-c", script], check=True, capture_output=True, timeout=60)
    return directory


def test_openssl_commands_make_a_certificate_the_exporter_serves(tmp_path: Path) -> None:
    tls = make_certificates(tmp_path / "tls")
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config: {{cert_file: {tls / 'server.crt'}, key_file: {tls / 'server.key'}}}\n"
    )
    config = tmp_path / "config.yml"
    config.write_text("{}\n")
    client = ssl.create_default_context(cafile=tls / "ca.crt")
    client.check_hostname = False  # reached by address here; the name is checked below
    with served_exporter(tmp_path, config, "--web.config.file", str(web), context=client) as served:
        reply = get(served.port, "/-/ready", client)
    assert reply.status == 200 and reply.peer_names == ("mailhost.example.com",)


def test_check_web_config_says_when_a_restart_is_needed(tmp_path: Path) -> None:
    tls = make_certificates(tmp_path / "tls")
    with_tls = tmp_path / "tls.yml"
    with_tls.write_text(
        f"tls_server_config: {{cert_file: {tls / 'server.crt'}, key_file: {tls / 'server.key'}}}\n"
    )
    result = CliRunner().invoke(main, ["check-web-config", str(with_tls)])
    assert result.exit_code == 0, result.output
    assert "restart one that runs without TLS now" in result.output
    assert "cannot turn TLS on" in result.output
    without = tmp_path / "plain.yml"
    without.write_text("{}\n")
    result = CliRunner().invoke(main, ["check-web-config", str(without)])
    assert result.exit_code == 0 and "cannot turn TLS off" in result.output, result.output
