"""Opportunistic TLS on port 25 against the real Postfix, whose certificate comes from a CA
the system does not trust: reported there, failed where the module requires verification;
the built-in config and a written one agree or say where they do not; certificate errors
in words, with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.config.root import default_config, parse_config
from mail_exporter.probes import run_probe
from mail_exporter.probes.result import FailureReason
from mail_exporter.targets import parse_address
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.scripted import scripted_server, server_context, smtp_script

README = Path(__file__).parent.parent / "README.md"

pytestmark = pytest.mark.integration


def port_25_module(**settings: Any) -> ModuleConfig:
    """The README's port-25 module (STARTTLS when offered), with ``settings`` on top."""
    return ModuleConfig.model_validate(
        {"protocol": "smtp", "tls": "starttls", "require_tls": False, **settings}
    )


async def test_unverified_certificate_on_port_25_is_reported_not_failed(postfix: Postfix) -> None:
    result = await run_probe(parse_address(f"127.0.0.1:{postfix.smtp_port}"), port_25_module(), 20)
    assert result.success, result.failure
    assert result.tls is not None and not result.tls.verified
    log = "\n".join(result.log)
    assert "certificate not verified" in log and "opportunistic TLS" in log


async def test_a_module_that_requires_verification_fails_on_it(postfix: Postfix) -> None:
    address = parse_address(f"127.0.0.1:{postfix.smtp_port}")
    written = port_25_module(tls_config={"insecure_skip_verify": False})
    for module in (written, ModuleConfig(protocol="smtp", tls="starttls")):
        result = await run_probe(address, module, 20)
        assert not result.success
        assert result.failure is not None and result.failure.reason is FailureReason.TLS
        detail = result.failure.detail
        assert "<Certificate" not in detail and "candidates exhausted" not in detail, detail
        assert "does not chain to a CA in" in detail and "set tls_config.ca_file" in detail


def test_a_login_makes_a_module_verify(tmp_path: Path) -> None:
    """STARTTLS when offered with a login is no sender's opportunistic TLS: the password
    goes to whoever shows a certificate."""
    secret = tmp_path / "pass"
    secret.write_text("s\n")
    module = port_25_module(auth={"username": "u", "password_file": str(secret)},
                            allow_plaintext_auth=True)  # fmt: skip
    assert module.verifies and not module.opportunistic
    assert not port_25_module().verifies and port_25_module().opportunistic


async def test_builtin_and_readme_port_25_modules_agree(postfix: Postfix) -> None:
    readme = README.read_text()
    section = readme[readme.index("## A minimal config") :]
    text = section[section.index("```yaml\n") + 8 : section.index("```\n", 8)]
    written = parse_config(text.split("  imaps:")[0]).modules["smtp_starttls"]
    builtin = default_config().modules["smtp_starttls"]
    assert builtin.tls_config.insecure_skip_verify is None  # no key the written one lacks
    address = parse_address(f"127.0.0.1:{postfix.smtp_port}")
    for module in (written, builtin):
        assert (await run_probe(address, module, 20)).success


async def test_probing_by_address_hints_at_server_name(tmp_path: Path, pki: PKI) -> None:
    """A certificate for a name, probed by IP: the error names both and says what to set."""
    context = server_context(pki.wronghost_cert, pki.wronghost_key)
    async with scripted_server(smtp_script(["220 hi"]), context) as address:
        module = ModuleConfig(protocol="smtp", tls="implicit",
                              tls_config={"ca_file": str(pki.ca_file)})  # fmt: skip
        result = await run_probe(parse_address(address), module, 20)
    assert result.failure is not None
    detail = result.failure.detail
    assert "is for other.example.net, not 127.0.0.1" in detail, detail
    assert "set tls_config.server_name" in detail and "<Certificate" not in detail
