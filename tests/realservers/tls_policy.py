"""Postfix and Dovecot with a TLS policy of their own, for the TLS scan's tests and benchmark.

``legacy`` accepts TLS 1.0 to 1.3 and every cipher at OpenSSL security level 0 (static RSA
key exchange and CBC with SHA-1 included); ``modern`` accepts TLS 1.2 and 1.3 only, and
Postfix's excludes the RSA key exchange and SHA-1 suites too (Dovecot's own default cipher
list already has no RSA key exchange). Both hold an RSA certificate beside the ECDSA one,
so that only the policy decides whether the RSA key exchange is accepted.
"""

from pathlib import Path
from typing import Literal

from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI, create_rsa_server_cert
from tests.realservers.postfix import Postfix

Policy = Literal["legacy", "modern"]
POLICIES: tuple[Policy, ...] = ("legacy", "modern")

POSTFIX_POLICIES: dict[Policy, str] = {
    "legacy": """\
smtpd_tls_protocols = >=TLSv1
smtpd_tls_mandatory_protocols = >=TLSv1
tls_medium_cipherlist = ALL:@SECLEVEL=0
""",
    "modern": """\
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_exclude_ciphers = kRSA, SHA1
""",
}
DOVECOT_POLICIES: dict[Policy, str] = {
    "legacy": "ssl_min_protocol = TLSv1\nssl_cipher_list = ALL:@SECLEVEL=0\n",
    "modern": "ssl_min_protocol = TLSv1.2\n",
}


class PolicyPostfix(Postfix):
    """A Postfix (see :class:`Postfix`) with an RSA certificate and the TLS ``policy``."""

    def __init__(
        self, work_dir: Path, pki: PKI, policy: Policy, dovecot_auth_port: int, lmtp_port: int
    ) -> None:
        super().__init__(work_dir, pki.server_cert, pki.server_key, dovecot_auth_port, lmtp_port)
        self.policy = policy
        self.rsa_cert, self.rsa_key = create_rsa_server_cert(pki, work_dir / "rsa")

    def _main_cf(self) -> str:
        chain = f"smtpd_tls_chain_files = {self.key}, {self.cert}"
        main_cf = super()._main_cf()
        assert chain in main_cf
        both = f"{chain}, {self.rsa_key}, {self.rsa_cert}"
        return main_cf.replace(chain, both) + POSTFIX_POLICIES[self.policy]


class PolicyDovecot(Dovecot):
    """A Dovecot (see :class:`Dovecot`) with an RSA certificate and the TLS ``policy``."""

    def __init__(self, work_dir: Path, pki: PKI, policy: Policy) -> None:
        super().__init__(work_dir, pki.server_cert, pki.server_key)
        self.policy = policy
        self.rsa_cert, self.rsa_key = create_rsa_server_cert(pki, work_dir / "rsa")

    def _config(self, uid: int, gid: int) -> str:
        alternative = f"ssl_alt_cert = <{self.rsa_cert}\nssl_alt_key = <{self.rsa_key}\n"
        return super()._config(uid, gid) + alternative + DOVECOT_POLICIES[self.policy]
