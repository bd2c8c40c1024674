"""OAuth2 access tokens for the logins of probes and round trips (XOAUTH2, OAUTHBEARER).

A module's ``auth.oauth2`` (:mod:`mail_exporter.config.oauth2`) names where its token
comes from; the exporter's one :class:`~.broker.TokenBroker` (held in
``ProbeMemory.tokens``) gets tokens from there, keeps them until shortly before they
expire and shares them between every probe and route that uses the same source.

- :mod:`.token`: :class:`~.token.AccessToken`, :class:`~.token.TokenError` and the fixed
  set of failure reasons;
- :mod:`.jwt`: RS256 signing with an RSA key, the keys and certificates it reads;
- :mod:`.endpoint`: one bounded request to a token endpoint and what its answer means;
- :mod:`.sources`: each kind of source (client credentials, refresh token, JWT bearer,
  command, file);
- :mod:`.broker`: the cache, the single fetch per source, the deadlines and the metrics.

This file imports nothing, so that the config can import :mod:`.jwt` while the broker
imports the config.
"""
