"""Entry point for ``python -m mail_exporter``: the same program as ``mail-exporter``."""

from mail_exporter.cli import main

main()
