"""What the three programs (the service and the two MCP servers) share.

- :mod:`.env`: env-variable parsing and validation (``Var``, parsers, ``SettingsError``, masking).
- :mod:`.logsetup`: the one log format and setup, secrets redacted, written off the event loop.
- :mod:`.mail`: SMTP and file-outbox transports.
- :mod:`.retry`: the one retry-with-backoff helper.
- :mod:`.ids`: cheap unique ids.
- :mod:`.tenancy`: the one tenant-id rule.

Imports only the standard library and third-party packages, never the rest of ``msev15``.
"""
