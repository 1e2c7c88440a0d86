"""The playground page and the bundled ReDoc, as served (the browser tests drive them)."""

from __future__ import annotations


async def test_playground_is_served_from_the_package_with_a_strict_policy(service) -> None:
    client = await service()
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = await page.text()
    assert "http" not in html.replace('content="width=device-width', "")  # nothing from another origin
    for asset in ("/playground/static/playground.js", "/playground/static/sse.js", "/playground/static/playground.css"):
        assert (await client.get(asset)).status == 200


async def test_the_playground_can_be_turned_off(service) -> None:
    client = await service(playground_enabled=False)
    assert (await client.get("/")).status == 404
    assert (await client.get("/playground/static/playground.js")).status == 404


async def test_redoc_uses_the_bundled_copy_unless_told_otherwise(service) -> None:
    client = await service()
    redoc = await (await client.get("/redoc")).text()
    assert 'src="/redoc/static/redoc.standalone.js"' in redoc
    bundle = await client.get("/redoc/static/redoc.standalone.js")
    assert bundle.status == 200 and len(await bundle.read()) > 500_000
    assert (await client.get("/redoc/static/LICENSE")).status == 200
