"""AUTH_MODE=jwt: a JWKS served on loopback, tokens signed with keys made by ``cryptography``."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from msev15.handlers.jwt_auth import InvalidToken, JwtVerifier
from tests.conftest import assert_envelope, make_settings
from tests.security.authkit import AUDIENCE, ISSUER, Jwks, SigningKey


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey("rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey("ec-1", "ec")


@pytest.fixture
async def jwks(rsa_key: SigningKey, ec_key: SigningKey) -> AsyncIterator[Jwks]:
    async with Jwks(rsa_key, ec_key).serving() as served:
        yield served


@pytest.fixture
async def verifier(jwks: Jwks) -> AsyncIterator[JwtVerifier]:
    v = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url)
    yield v
    await v.close()


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_good_tokens_rsa_and_ec(verifier: JwtVerifier, rsa_key: SigningKey, ec_key: SigningKey) -> None:
    assert await verifier.verify(rsa_key.token("acme")) == ("acme", "user-1")
    assert await verifier.verify(ec_key.token("globex")) == ("globex", "user-1")


async def test_leeway_of_60_seconds(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    assert (await verifier.verify(rsa_key.token(exp_in=-30)))[0] == "acme"  # expired 30 s ago: within leeway
    assert (await verifier.verify(rsa_key.token(nbf_in=30)))[0] == "acme"  # valid in 30 s: within leeway


@pytest.mark.parametrize(("make", "reason"), [
    (lambda k: k.token(exp_in=-120), "expired"),
    (lambda k: k.token(nbf_in=600), "not valid yet"),
    (lambda k: k.token(aud="another-api"), "another audience"),
    (lambda k: k.token(iss="https://evil.test"), "another issuer"),
    (lambda k: k.token(tenant=None), "no valid 'tenant_id' claim"),
    (lambda k: k.token(tenant="bad tenant"), "no valid 'tenant_id' claim"),
    (lambda k: k.token(kid="unknown-kid"), "not a known signing key"),
    (lambda k: k.token(kid=None), "no 'kid'"),
    (lambda k: "not.a.token", "malformed"),
    (lambda k: "", "malformed"),
])
async def test_refused_tokens(verifier: JwtVerifier, rsa_key: SigningKey, make: Any, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        await verifier.verify(make(rsa_key))


async def test_token_without_exp_is_refused(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "tenant_id": "acme"}, rsa_key.private, algorithm="RS256",
                       headers={"kid": rsa_key.kid})
    with pytest.raises(InvalidToken):
        await verifier.verify(token)


def _signed(key: SigningKey, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "tenant_id": "acme", "sub": "user-1", "iat": now, **claims}
    return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": key.kid})


@pytest.mark.parametrize("exp", [str(int(time.time()) + 300), 10**300, 1e300, True, None, [1], {"t": 1}])
async def test_an_exp_that_is_not_a_reasonable_number_is_refused(verifier: JwtVerifier, rsa_key: SigningKey,
                                                                  exp: Any) -> None:
    with pytest.raises(InvalidToken):
        await verifier.verify(_signed(rsa_key, exp=exp))


async def test_exp_within_the_maximum_lifetime_of_iat_or_now(jwks: Jwks, rsa_key: SigningKey) -> None:
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url, max_lifetime=3600)
    try:
        now = int(time.time())
        assert (await verifier.verify(_signed(rsa_key, exp=now + 3000)))[0] == "acme"
        assert (await verifier.verify(_signed(rsa_key, exp=now + 3000.5)))[0] == "acme"  # a float is a number
        with pytest.raises(InvalidToken, match="lives longer than 3600 seconds"):
            await verifier.verify(_signed(rsa_key, exp=now + 7200))
        # Issued an hour ago for two hours: still inside its life, but longer than allowed.
        with pytest.raises(InvalidToken, match="lives longer"):
            await verifier.verify(_signed(rsa_key, iat=now - 3600, exp=now + 3600 + 120))
        # Without iat the life is counted from now.
        token = _signed(rsa_key, exp=now + 3000)
        claims = jwt.decode(token, options={"verify_signature": False})
        del claims["iat"]
        no_iat = jwt.encode(claims, rsa_key.private, algorithm=rsa_key.alg, headers={"kid": rsa_key.kid})
        assert (await verifier.verify(no_iat))[0] == "acme"
    finally:
        await verifier.close()


async def test_the_service_takes_the_maximum_lifetime_from_its_settings(service, tmp_path: Path, jwks: Jwks,
                                                                         rsa_key: SigningKey) -> None:
    client = await service(auth_mode="jwt", jwt_jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                           jwt_max_lifetime_seconds=600)
    now = int(time.time())
    ok = await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {_signed(rsa_key, exp=now + 500)}"})
    assert ok.status == 200
    long = await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {_signed(rsa_key, exp=now + 900)}"})
    assert long.status == 401
    assert_envelope(await long.json(), "unauthorized")


async def test_alg_none_is_refused(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    claims = jwt.decode(rsa_key.token(), options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': rsa_key.kid})}.{_b64(claims)}."
    with pytest.raises(InvalidToken, match="algorithm is not allowed"):
        await verifier.verify(unsigned)


async def test_hs256_signed_with_the_public_key_is_refused(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    """The classic confusion: the attacker uses the published public key as an HMAC secret."""
    import hashlib
    import hmac

    claims = jwt.decode(rsa_key.token(), options={"verify_signature": False})
    head = _b64({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid})
    body = _b64(claims)
    signature = hmac.new(rsa_key.public_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken, match="algorithm is not allowed"):
        await verifier.verify(f"{head}.{body}.{_b64(signature)}")


async def test_a_token_signed_by_another_key_with_a_known_kid_is_refused(verifier: JwtVerifier,
                                                                          rsa_key: SigningKey) -> None:
    forger = SigningKey(rsa_key.kid)  # same kid, different private key
    with pytest.raises(InvalidToken, match="signature"):
        await verifier.verify(forger.token())


async def test_an_unknown_kid_refreshes_the_jwks_once_then_rotated_keys_work(jwks: Jwks, rsa_key: SigningKey) -> None:
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url, min_refresh=3600)
    try:
        assert (await verifier.verify(rsa_key.token()))[0] == "acme"
        assert jwks.hits == 1
        assert (await verifier.verify(rsa_key.token()))[0] == "acme"
        assert jwks.hits == 1  # cached
        rotated = SigningKey("rsa-2")
        jwks.keys = [rotated]  # the issuer rotates: the old key is gone
        assert (await verifier.verify(rotated.token("acme")))[0] == "acme"  # unknown kid: fetched again
        assert jwks.hits == 2
        with pytest.raises(InvalidToken, match="not a known signing key"):
            await verifier.verify(rsa_key.token())  # the old key no longer verifies
        with pytest.raises(InvalidToken, match="not a known signing key"):
            await verifier.verify(SigningKey("garbage-kid").token())
        assert jwks.hits == 2  # unknown kids do not make it fetch again and again
    finally:
        await verifier.close()


async def test_public_key_file(tmp_path: Path, rsa_key: SigningKey) -> None:
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(rsa_key.public_pem())
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, public_key_file=str(pem))
    assert (await verifier.verify(rsa_key.token(kid=None)))[0] == "acme"
    with pytest.raises(InvalidToken):
        await verifier.verify(SigningKey("x").token())


async def test_through_the_service(service, tmp_path: Path, jwks: Jwks, rsa_key: SigningKey) -> None:
    client = await service(auth_mode="jwt", jwt_jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    ok = await client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {rsa_key.token('acme')}"})
    assert ok.status == 200
    assert (await ok.json())["tenant_id"] == "acme"
    expired = await client.get("/api/v1/sessions",
                               headers={"Authorization": f"Bearer {rsa_key.token('acme', exp_in=-120)}"})
    assert expired.status == 401
    body = await expired.json()
    assert_envelope(body, "unauthorized")
    assert body["detail"] == "the token has expired"


def test_jwt_mode_needs_its_settings(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth_mode="jwt")
    problems = settings.problems()
    assert any("JWT_JWKS_URL" in p for p in problems) and any("JWT_ISSUER" in p for p in problems)
    good = make_settings(tmp_path, auth_mode="jwt", jwt_jwks_url="https://i.test/jwks", jwt_issuer="i",
                         jwt_audience="a")
    assert good.problems() == []

