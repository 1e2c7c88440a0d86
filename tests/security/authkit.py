"""Helpers for the auth tests: RSA/EC keys made with ``cryptography``, signed tokens, a JWKS served
on loopback, and API keys created in a real SQLite store."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from msev15.store.apikeys import SqliteApiKeyStore

ISSUER = "https://issuer.test"
AUDIENCE = "msev15-api"


class SigningKey:
    def __init__(self, kid: str, kind: str = "rsa") -> None:
        self.kid = kid
        self.kind = kind
        if kind == "rsa":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"
        self.public = self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if self.kind == "rsa" else jwt.algorithms.ECAlgorithm
        data: dict[str, Any] = json.loads(algorithm.to_jwk(self.public))
        return {**data, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def token(self, tenant: str | None = "acme", *, iss: str = ISSUER, aud: str = AUDIENCE, exp_in: float = 300,
              nbf_in: float | None = None, kid: str | None = "", **claims: Any) -> str:
        now = time.time()
        payload: dict[str, Any] = {"iss": iss, "aud": aud, "sub": "user-1", "iat": int(now), "exp": int(now + exp_in),
                                   **claims}
        if tenant is not None:
            payload["tenant_id"] = tenant
        if nbf_in is not None:
            payload["nbf"] = int(now + nbf_in)
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=headers)


class Jwks:
    """A JWKS endpoint on a loopback port; ``keys`` can be replaced (rotation); ``hits`` counts fetches."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.hits = 0
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({"keys": [k.jwk() for k in self.keys]})

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Jwks]:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        self.url = str(server.make_url("/.well-known/jwks.json"))
        try:
            yield self
        finally:
            await server.close()


async def create_keys(path: Path, *tenants: str, role: str = "customer") -> dict[str, tuple[str, str]]:
    """tenant -> (key id, key), made in the SQLite store at ``path`` (what ``msev15 keys create`` does)."""
    store = SqliteApiKeyStore(path)
    try:
        made = {}
        for tenant in tenants:
            record, key = await store.create(tenant, f"{tenant}-app", role)
            made[tenant] = (record.id, key)
        return made
    finally:
        await store.close()


async def revoke_key(path: Path, key_id: str) -> None:
    store = SqliteApiKeyStore(path)
    try:
        assert await store.revoke(key_id)
    finally:
        await store.close()
