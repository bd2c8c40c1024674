"""Real Postfix and Dovecot instances on loopback, with a generated PKI, for integration tests."""
