"""mail_exporter: a Prometheus exporter that watches mail servers."""

__version__ = "0.1.0"
