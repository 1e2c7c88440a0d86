"""MSEv15E2E: a customer-service agent served over REST and Server-Sent Events."""

__version__ = "0.1.0"
