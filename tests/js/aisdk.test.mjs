// The AI SDK's DefaultChatTransport + readUIMessageStream against the running service (MSEV15_URL).
import assert from "node:assert/strict";
import test from "node:test";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const BASE = process.env.MSEV15_URL;
assert.ok(BASE, "MSEV15_URL is the running service");

function userMessage(id, text) {
  return { id, role: "user", parts: [{ type: "text", text }] };
}

async function lastMessage(stream) {
  let last;
  for await (const message of readUIMessageStream({ stream })) last = message;
  return last;
}

test("DefaultChatTransport gets the assistant message with its text and tool parts", async () => {
  const chatId = `aisdk-${Date.now()}`;
  const transport = new DefaultChatTransport({ api: `${BASE}/api/v1/ai-sdk/chat`, headers: { "X-Tenant-ID": "default" } });
  const messages = [userMessage("u1", "Show my recent orders")];
  const stream = await transport.sendMessages({
    chatId, messages, trigger: "submit-message", messageId: undefined, abortSignal: undefined,
  });
  const assistant = await lastMessage(stream);
  assert.equal(assistant.role, "assistant");
  assert.ok(assistant.metadata.turnId, "the turn id is in the message metadata");
  const tool = assistant.parts.find((p) => p.type === "tool-get_all_orders");
  assert.ok(tool, `a tool part in ${JSON.stringify(assistant.parts.map((p) => p.type))}`);
  assert.equal(tool.state, "output-available");
  assert.deepEqual(tool.output, { ok: true });
  const text = assistant.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
  assert.match(text, /ORD-/);
  assert.ok(assistant.parts.every((p) => p.type !== "text" || p.state === "done"));

  // A second message continues the same chat (the server keeps the history).
  const again = await transport.sendMessages({
    chatId, messages: [...messages, assistant, userMessage("u2", "Thanks")], trigger: "submit-message",
    messageId: undefined, abortSignal: undefined,
  });
  const second = await lastMessage(again);
  assert.ok(second.parts.some((p) => p.type === "text" && p.text.length > 0));
  const history = await (await fetch(`${BASE}/api/v1/sessions/${chatId}/history`)).json();
  assert.equal(history.message_count, 4);

  // Nothing runs now: reconnecting answers 204, which the transport reports as null.
  assert.equal(await transport.reconnectToStream({ chatId }), null);
});

test("a request without a user message is refused before any stream", async () => {
  const transport = new DefaultChatTransport({ api: `${BASE}/api/v1/ai-sdk/chat` });
  await assert.rejects(transport.sendMessages({
    chatId: "aisdk-bad", messages: [], trigger: "submit-message", messageId: undefined, abortSignal: undefined,
  }), /validation_error/);
});

test("while a person holds the chat, the answer is a handoff data part and the message is kept for them", async () => {
  const chatId = `aisdk-held-${Date.now()}`;
  const transport = new DefaultChatTransport({ api: `${BASE}/api/v1/ai-sdk/chat`, headers: { "X-Tenant-ID": "default" } });
  const messages = [userMessage("u1", "I want to talk to a person")];
  const handedOff = await lastMessage(await transport.sendMessages({
    chatId, messages, trigger: "submit-message", messageId: undefined, abortSignal: undefined,
  }));
  assert.ok(handedOff.parts.some((p) => p.type === "data-handoff"), JSON.stringify(handedOff.parts));

  const held = await lastMessage(await transport.sendMessages({
    chatId, messages: [...messages, handedOff, userMessage("u2", "Hello? Anyone there?")], trigger: "submit-message",
    messageId: undefined, abortSignal: undefined,
  }));
  assert.deepEqual(held.parts.map((p) => p.type), ["step-start", "data-handoff"]);
  assert.equal(held.parts[1].data.mode, "waiting_for_human");
  assert.equal(held.metadata.status, "with_human");
  const history = await (await fetch(`${BASE}/api/v1/sessions/${chatId}/history`)).json();
  assert.equal(history.mode, "waiting_for_human");
  assert.equal(history.messages.at(-1).content, "Hello? Anyone there?");
});
