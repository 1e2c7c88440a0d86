"""Verifying JSON Web Tokens (AUTH_MODE=jwt) with PyJWT.

Only asymmetric algorithms are accepted (RSA, RSA-PSS, ECDSA, EdDSA): never ``none``, and never
an HMAC, so a token "signed" with the public key as an HMAC secret is refused before any key is
used. ``exp`` is required, must be a JSON number (PyJWT alone also takes a numeric string) and
at most ``max_lifetime`` seconds (JWT_MAX_LIFETIME_SECONDS) past ``iat``, or past now when
``iat`` is absent or later, so a misconfigured issuer cannot mint a token that never expires.
``exp``/``nbf`` get 60 s of leeway; ``iss`` and ``aud`` must match the settings. Keys come from
a PEM file or a JWKS URL; the JWKS is cached and fetched again when a token names an unknown
``kid`` (at most once per ``min_refresh`` seconds, so garbage kids cannot make the service
hammer the issuer). The caller's role is the highest known role in the ``roles_claim`` claim (a
string or a list; ``customer`` when absent).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from msev15.common.roles import highest
from msev15.common.tenancy import TenantIdError, check_tenant

log = logging.getLogger("api.auth")

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY = 60
MAX_LIFETIME = 86_400


class InvalidToken(Exception):
    """Why a token is refused, in words safe to log and to show (never the token)."""


class JwtVerifier:
    def __init__(self, *, issuer: str, audience: str, tenant_claim: str = "tenant_id", jwks_url: str = "",
                 public_key_file: str = "", jwks_ttl: float = 300.0, min_refresh: float = 5.0,
                 timeout: float = 5.0, max_lifetime: int = MAX_LIFETIME, roles_claim: str = "roles") -> None:
        self.issuer = issuer
        self.max_lifetime = max_lifetime
        self.roles_claim = roles_claim
        self.audience = audience
        self.tenant_claim = tenant_claim
        self.jwks_url = jwks_url
        self.jwks_ttl = jwks_ttl
        self.min_refresh = min_refresh
        self.timeout = timeout
        self._static: Any = None
        if public_key_file:
            self._static = load_pem_public_key(Path(public_key_file).read_bytes())
        self._keys: dict[str, Any] = {}
        self._fetched = 0.0
        self._last_unknown_refresh = -float("inf")
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _fetch(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.get(self.jwks_url) as resp:
                resp.raise_for_status()
                data = json.loads(await resp.read())
            keys = jwt.PyJWKSet.from_dict(data).keys
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWKSetError) as exc:
            log.warning("cannot fetch the JWKS from %s: %s", self.jwks_url, exc)
            raise InvalidToken("the token's signing keys are unavailable") from None
        self._keys = {k.key_id: k.key for k in keys if k.key_id and k.public_key_use in (None, "sig")}
        self._fetched = time.monotonic()

    async def _key(self, kid: str | None) -> Any:
        if self._static is not None:
            return self._static
        if not kid:
            raise InvalidToken("the token has no 'kid'")
        async with self._lock:
            now = time.monotonic()
            if not self._fetched or now - self._fetched > self.jwks_ttl:
                await self._fetch()
            elif kid not in self._keys and now - self._last_unknown_refresh >= self.min_refresh:
                self._last_unknown_refresh = now  # keys may have rotated: look once more
                await self._fetch()
            key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("the token's 'kid' is not a known signing key")
        return key

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        exp: Any = claims["exp"]
        iat: Any = claims.get("iat")
        if not _is_number(exp):
            raise InvalidToken("the token's 'exp' is not a number") from None
        now = time.time()
        start = min(now, iat) if _is_number(iat) else now
        if exp > start + self.max_lifetime + LEEWAY:
            raise InvalidToken(f"the token lives longer than {self.max_lifetime} seconds") from None

    async def verify(self, token: str) -> tuple[str, str]:
        """(tenant id, subject) of a valid token; :class:`InvalidToken` otherwise."""
        tenant, subject, _ = await self.verify_with_role(token)
        return tenant, subject

    async def verify_with_role(self, token: str) -> tuple[str, str, str]:
        """(tenant id, subject, role) of a valid token; :class:`InvalidToken` otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the token is malformed") from None
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("the token's algorithm is not allowed")
        key = await self._key(header.get("kid"))
        try:
            claims = jwt.decode(token, key, algorithms=[header["alg"]], audience=self.audience, issuer=self.issuer,
                                leeway=LEEWAY, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token is from another issuer") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidToken("the token's signature or claims are invalid") from None
        self._check_lifetime(claims)
        try:
            tenant = check_tenant(claims.get(self.tenant_claim))
        except TenantIdError:
            raise InvalidToken(f"the token has no valid '{self.tenant_claim}' claim") from None
        return tenant, str(claims.get("sub", "")), highest(claims.get(self.roles_claim))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
