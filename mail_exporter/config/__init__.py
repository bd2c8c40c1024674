"""The configuration file: strict models, YAML loading with line numbers, every error at once.

``load_config`` either returns a complete, valid :class:`Config` or raises
:class:`ConfigError` listing every problem as ``key.path (line N): message``.
Nothing half-valid ever reaches the scheduler. Files (the config and the secrets and
CA files it names) are read, and YAML composed, within limits of size, depth and
aliases (see :mod:`mail_exporter.config.files`), so a hostile file is one more problem.

Its parts, one concern each, are imported from their own modules by the code that needs
them; this file imports nothing, so that the collectors can take their field types from
here while the root model is built from the collectors:

- :mod:`~mail_exporter.config.root`: :class:`Config`, ``load_config``, ``parse_config``,
  ``default_config``;
- :mod:`~mail_exporter.config.files`: bounded reading of files and YAML;
- :mod:`~mail_exporter.config.validation`: YAML into a model with every problem listed by
  key path and line (the web config uses it too);
- :mod:`~mail_exporter.config.fields`: field types every section shares (durations,
  addresses, names, paths beside the config file, CA files);
- :mod:`~mail_exporter.config.probes`: modules, targets, ``global`` and ``probe``;
- :mod:`~mail_exporter.config.oauth2`: a login's OAuth2 token source (``auth.oauth2``);
- :mod:`~mail_exporter.config.roundtrip`: the round-trip routes;
- :mod:`~mail_exporter.config.collectors`: the ``collectors`` section, a section per
  registered collector (each defines its own beside its code);
- :mod:`~mail_exporter.config.references`: checks that span sections (the modules
  targets and routes name, names given twice).
"""
