// Approvals and client tools with the real clients (run by tests/test_js_approvals.py, which
// scripts the model: each test's model replies are queued in this file's order).
// @ag-ui/client: interrupt outcome + resume entries, frontend tools + a tool message.
// ai@6: addToolApprovalResponse and addToolOutput with sendAutomaticallyWhen.
import assert from "node:assert/strict";
import test from "node:test";
import { HttpAgent } from "@ag-ui/client";
import {
  AbstractChat, DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses, lastAssistantMessageIsCompleteWithToolCalls,
} from "ai";

const BASE = process.env.MSEV15_URL;
const [ORDER_A, ORDER_B] = [process.env.ORDER_A, process.env.ORDER_B];
assert.ok(BASE && ORDER_A && ORDER_B, "MSEV15_URL, ORDER_A and ORDER_B are set");

async function history(session) {
  const resp = await fetch(`${BASE}/api/v1/sessions/${session}/history`);
  assert.equal(resp.status, 200);
  return resp.json();
}

test("AG-UI: an approval interrupts the run; resume entries continue it", async () => {
  const thread = `agui-approval-${Date.now()}`;
  const agent = new HttpAgent({ url: `${BASE}/api/v1/ag-ui`, threadId: thread });
  agent.addMessage({ id: "u1", role: "user", content: `Please cancel order ${ORDER_A}` });
  const finished = [];
  const errors = [];
  const subscriber = {
    onRunFinishedEvent: (params) => { finished.push(params); },
    onRunErrorEvent: ({ event }) => { errors.push(event); },
  };
  await agent.runAgent({ runId: "run-1" }, subscriber);
  assert.deepEqual(errors, []);
  assert.equal(finished[0].outcome, "interrupt");
  const [interrupt] = finished[0].interrupts;
  assert.equal(interrupt.reason, "tool_approval");
  assert.equal(interrupt.toolCallId, "c-agui");
  assert.deepEqual(agent.pendingInterrupts.map((i) => i.id), ["c-agui"]);
  const call = agent.messages.find((m) => m.role === "assistant" && m.toolCalls?.length);
  assert.equal(call.toolCalls[0].function.name, "update_order_status");

  const seen = [];
  await agent.runAgent({
    runId: "run-2", resume: [{ interruptId: interrupt.id, status: "resolved", payload: { approved: true } }],
  }, { ...subscriber, onEvent: ({ event }) => { seen.push(event.type); } });
  assert.deepEqual(errors, []);
  assert.equal(finished[1].outcome, "success");
  assert.ok(seen.includes("TOOL_CALL_RESULT"), `the approved call ran: ${seen}`);
  const answer = agent.messages.filter((m) => m.role === "assistant" && m.content).at(-1);
  assert.match(answer.content, /AG-UI: cancelled/);
  const kept = await history(thread);
  assert.equal(kept.message_count, 2);
});

test("AG-UI: a frontend tool ends the run; its tool message continues the turn", async () => {
  const thread = `agui-front-${Date.now()}`;
  const tool = { name: "confirm_address", description: "Ask the user to confirm their address",
    parameters: { type: "object", properties: { address: { type: "string" } } } };
  const agent = new HttpAgent({ url: `${BASE}/api/v1/ag-ui`, threadId: thread });
  agent.addMessage({ id: "u1", role: "user", content: "Ship it to my address" });
  const finished = [];
  await agent.runAgent({ runId: "run-1", tools: [tool] }, { onRunFinishedEvent: (p) => { finished.push(p); } });
  assert.equal(finished[0].outcome, "success");
  assert.deepEqual(finished[0].pendingToolCallIds, ["c-front"]);
  agent.addMessage({ id: "t1", role: "tool", toolCallId: "c-front", content: JSON.stringify({ confirmed: true }) });
  await agent.runAgent({ runId: "run-2", tools: [tool] }, { onRunFinishedEvent: (p) => { finished.push(p); } });
  assert.equal(finished[1].outcome, "success");
  const answer = agent.messages.filter((m) => m.role === "assistant" && m.content).at(-1);
  assert.match(answer.content, /address confirmed/);
});

class ArrayState {
  constructor() { this.status = "ready"; this.error = undefined; this.messages = []; }
  pushMessage(message) { this.messages = [...this.messages, message]; }
  popMessage() { this.messages = this.messages.slice(0, -1); }
  replaceMessage(index, message) { this.messages = this.messages.map((m, i) => (i === index ? message : m)); }
  snapshot(thing) { return structuredClone(thing); }
}

class Chat extends AbstractChat {
  constructor(init) { super({ ...init, state: new ArrayState() }); }
}

function finishes(count) {
  const done = [];
  let wake;
  return {
    onFinish: ({ message }) => { done.push(message); if (done.length >= count && wake) wake(); },
    all: () => (done.length >= count ? Promise.resolve(done) : new Promise((r) => { wake = () => r(done); })),
  };
}

test("AI SDK: tool-approval-request, then addToolApprovalResponse continues the turn", async () => {
  const chatId = `aisdk-approval-${Date.now()}`;
  const finished = finishes(2);
  const chat = new Chat({
    id: chatId, transport: new DefaultChatTransport({ api: `${BASE}/api/v1/ai-sdk/chat` }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses, onFinish: finished.onFinish,
  });
  await chat.sendMessage({ text: `Please cancel order ${ORDER_B}` });
  const part = chat.messages.at(-1).parts.find((p) => p.type === "tool-update_order_status");
  assert.equal(part.state, "approval-requested");
  assert.equal(part.approval.id, "c-ai");
  await chat.addToolApprovalResponse({ id: part.approval.id, approved: true });
  await finished.all();
  const last = chat.messages.at(-1);
  const text = last.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
  assert.match(text, /AI SDK: cancelled/);
  assert.equal(chat.error, undefined);
  const kept = await history(chatId);
  assert.equal(kept.message_count, 2);
});

test("AI SDK: a client tool's call finishes the message; addToolOutput continues it", async () => {
  const chatId = `aisdk-client-${Date.now()}`;
  const tool = { name: "get_location", description: "The user's city", parameters: { type: "object" } };
  const finished = finishes(2);
  const chat = new Chat({
    id: chatId, transport: new DefaultChatTransport({ api: `${BASE}/api/v1/ai-sdk/chat` }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls, onFinish: finished.onFinish,
  });
  await chat.sendMessage({ text: "Where am I?" }, { body: { tools: [tool] } });
  const part = chat.messages.at(-1).parts.find((p) => p.type === "tool-get_location");
  assert.equal(part.state, "input-available");
  await chat.addToolOutput({ tool: "get_location", toolCallId: part.toolCallId, output: { city: "Porto" } });
  await finished.all();
  const text = chat.messages.at(-1).parts.filter((p) => p.type === "text").map((p) => p.text).join("");
  assert.match(text, /Porto/);
  assert.equal(chat.error, undefined);
});
