"""The playground, /docs and /redoc in headless Chromium (Debian's ``chromium``), driven by Playwright.

No browser is downloaded: Playwright runs the system Chromium. Without it the tests are skipped
and say so; under CI (``CI=true``) they fail instead, since ``.ci/run`` installs it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.complaints.server import eventually
from tests.llm_server import Call, Reply, ScriptedLLM
from tests.security.authkit import create_keys

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parent.parent / "docs"
TIMEOUT_MS = 15_000


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not os.path.exists(CHROMIUM):
        reason = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium): the browser tests did not run"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; .ci/run installs it, so under CI this is an error")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    expect.set_options(timeout=TIMEOUT_MS)

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _open(browser: Any, url: str, *, width: int = 1280, height: int = 800) -> tuple[Any, Any]:
    context = await browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(url)
    return context, page


async def _model_service(service: Any, llm: ScriptedLLM, **overrides: Any) -> str:
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k",
                           order_db_seed=True, **overrides)
    return str(client.make_url("/"))


async def _send(page: Any, session: str, text: str) -> None:
    await page.fill("#session", session)
    await page.dispatch_event("#session", "change")
    await page.fill("#message", text)
    await page.press("#message", "Enter")


async def _answer_text(page: Any) -> str:
    return str(await page.locator("#log li.assistant .body .text").last.inner_text())


async def test_chat_streams_tokens_and_shows_the_tool_card(browser: Any, service: Any, llm: ScriptedLLM,
                                                           tmp_path: Path) -> None:
    gate = asyncio.Event()
    llm.push(Reply("Let me check. ", tool_calls=[Call("get_all_orders", {"limit": 5})]),
             Reply("You have two recent orders, both shipped.", gate=gate, gate_after=3))
    url = await _model_service(service, llm)
    context, page = await _open(browser, url)
    await _send(page, "web-demo", "Show my recent orders")
    card = page.locator("#log .tool").last
    await card.locator(".result.ok").wait_for()
    assert "get_all_orders" in await card.inner_text() and '"limit":5' in await card.inner_text()
    # Tokens appear as they stream: part of the answer is on the page while the model still holds the rest.
    await expect(page.locator("#log li.assistant").last).to_contain_text("You have")
    assert "shipped" not in await page.locator("#log li.assistant").last.inner_text()
    assert await page.locator("#stop").is_enabled()
    gate.set()
    await page.locator("#send:not([disabled])").wait_for()
    answer = await page.locator("#log li.assistant").last.inner_text()
    assert answer.count("You have two recent orders, both shipped.") == 1
    await page.locator("#sessions button.open", has_text="web-demo").wait_for()
    # The README's screenshots are rewritten only when asked (a test run leaves the tree clean).
    shots = DOCS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    await page.screenshot(path=str(shots / "playground.png"))
    # The same page on a phone-width screen: nothing wider than the viewport.
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.screenshot(path=str(shots / "playground-phone.png"), full_page=True)
    # Reload: the history comes back from the server; then delete the session from the list.
    await page.reload()
    await page.locator("#log li.user", has_text="Show my recent orders").wait_for()
    await page.get_by_role("button", name="Delete session web-demo").click()
    await page.locator("#sessions button.open", has_text="web-demo").wait_for(state="detached")
    await context.close()


async def test_thumbs_rate_the_answer_and_rating_again_replaces_it(browser: Any, service: Any,
                                                                   llm: ScriptedLLM) -> None:
    llm.push(Reply("Your order ORD-1 has shipped."))
    client = await service(llm_provider="openai", openai_base_url=f"{llm.url}/v1", openai_api_key="k")
    context, page = await _open(browser, str(client.make_url("/")))
    await page.fill("#tenant", "acme")
    await _send(page, "web-rate", "Where is my order?")
    up = page.get_by_role("button", name="Good answer")
    down = page.get_by_role("button", name="Bad answer")
    await up.click()
    await expect(up).to_have_attribute("aria-pressed", "true")
    await down.click()
    await expect(down).to_have_attribute("aria-pressed", "true")
    await expect(up).to_have_attribute("aria-pressed", "false")
    listed = await (await client.get("/api/v1/feedback?tenant_id=acme")).json()
    assert [(f["session_id"], f["rating"]) for f in listed["feedback"]] == [("web-rate", "down")]
    await context.close()


async def test_stop_cancels_a_long_answer(browser: Any, service: Any, llm: ScriptedLLM) -> None:
    gate = asyncio.Event()  # never set: the answer would go on until the model's stream is closed
    llm.push(Reply("A very long answer " * 50, gate=gate, gate_after=3))
    url = await _model_service(service, llm)
    context, page = await _open(browser, url)
    await _send(page, "web-cancel", "Tell me everything")
    await expect(page.locator("#log li.assistant").last).to_contain_text("A very")
    await page.get_by_role("button", name="Stop").click()
    await page.locator("#log li.assistant .answer-error", has_text="Stopped.").wait_for()
    await page.locator("#send:not([disabled])").wait_for()
    await context.close()


async def test_a_dropped_connection_resumes_without_repeating_text(browser: Any, service: Any,
                                                                    llm: ScriptedLLM) -> None:
    words = [f"word{i}" for i in range(40)]
    answer = " ".join(words)
    gate = asyncio.Event()
    llm.push(Reply(answer, gate=gate, gate_after=5))
    url = await _model_service(service, llm)
    context, page = await _open(browser, url)
    await _send(page, "web-resume", "Say forty words")
    await expect(page.locator("#log li.assistant").last).to_contain_text("word3")
    await context.set_offline(True)
    await page.locator("#status", has_text="Connection lost").wait_for()
    gate.set()  # the turn goes on at the server while the page is offline
    await eventually(lambda: llm.streams_finished == 1, "the model finished while the page was offline")
    await context.set_offline(False)
    await page.locator("#send:not([disabled])").wait_for()
    assert await _answer_text(page) == answer
    await context.close()


async def test_with_api_keys_the_key_field_carries_every_request_and_resumes(browser: Any, service: Any,
                                                                           llm: ScriptedLLM, tmp_path: Path) -> None:
    """AUTH_MODE=api_key (the production checklist's): the page asks for a key, sends it as the
    bearer credential on every request (a stream resume too), keeps it for the tab only, and says
    clearly when it is missing or refused."""
    keys_db = tmp_path / "keys.db"
    key = (await create_keys(keys_db, "acme"))["acme"][1]
    words = [f"word{i}" for i in range(30)]
    gate = asyncio.Event()
    llm.push(Reply(" ".join(words), gate=gate, gate_after=5))
    url = await _model_service(service, llm, auth_mode="api_key", api_keys_db_path=str(keys_db))
    context, page = await _open(browser, url)
    not_found: list[str] = []
    page.on("response", lambda resp: not_found.append(resp.url) if resp.status == 404 else None)
    await page.locator("#status", has_text="The service needs an API key").wait_for()

    await page.fill("#apikey", "msev15-not-a-real-key")
    await page.dispatch_event("#apikey", "change")
    await page.locator("#status", has_text="did not accept this API key").wait_for()

    await page.fill("#apikey", key)
    await page.dispatch_event("#apikey", "change")
    await expect(page.locator("#status")).to_have_text("")
    assert await page.locator("#tenant").is_disabled()
    await _send(page, "web-keyed", "Say thirty words")
    await expect(page.locator("#log li.assistant").last).to_contain_text("word3")
    await context.set_offline(True)
    await page.locator("#status", has_text="Connection lost").wait_for()
    gate.set()
    await eventually(lambda: llm.streams_finished == 1, "the model finished while the page was offline")
    await context.set_offline(False)
    await page.locator("#send:not([disabled])").wait_for()
    assert await _answer_text(page) == " ".join(words)  # the resume was let in with the key
    await page.locator("#sessions button.open", has_text="web-keyed").wait_for()

    assert await page.evaluate("sessionStorage.getItem('msev15.apikey')") == key
    stored = await page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert key not in stored
    # A new session's history is not asked for (it would only log a 404).
    await page.get_by_role("button", name="New").click()
    await expect(page.locator("#log li")).to_have_count(0)
    assert not_found == []
    # Another tab of the same browser starts without the key.
    other = await context.new_page()
    await other.goto(url)
    assert await other.input_value("#apikey") == ""
    await context.close()


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_render_with_the_network_blocked(browser: Any, service: Any, path: str) -> None:
    client = await service()
    base = str(client.make_url("/")).rstrip("/")
    blocked: list[str] = []
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)

    async def only_the_service(route: Any) -> None:
        if route.request.url.startswith(base + "/"):
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_the_service)
    page = await context.new_page()
    await page.goto(base + path)
    title = ".swagger-ui .info .title" if path == "/docs" else "h1"
    await page.locator(title, has_text="MSEv15E2E Customer Service API").first.wait_for()
    await page.get_by_text("/api/v1/ag-ui").first.wait_for(state="attached")
    await page.wait_for_load_state("networkidle")
    assert blocked == []  # nothing (ReDoc's logo, Swagger's validator badge) is fetched from elsewhere
    await context.close()
