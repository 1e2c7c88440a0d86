// @ag-ui/client's HttpAgent against the running service (MSEV15_URL), with its own event verifier.
import assert from "node:assert/strict";
import test from "node:test";
import { HttpAgent } from "@ag-ui/client";

const BASE = process.env.MSEV15_URL;
assert.ok(BASE, "MSEV15_URL is the running service");

async function history(session, tenant) {
  const resp = await fetch(`${BASE}/api/v1/sessions/${session}/history?tenant_id=${tenant}`);
  assert.equal(resp.status, 200);
  return resp.json();
}

test("HttpAgent runs a turn with a tool call; a second run continues the thread", async () => {
  const thread = `agui-${Date.now()}`;
  const agent = new HttpAgent({ url: `${BASE}/api/v1/ag-ui`, threadId: thread, headers: { "X-Tenant-ID": "default" } });
  agent.addMessage({ id: "u1", role: "user", content: "Show my recent orders" });
  const seen = [];
  const errors = [];
  await agent.runAgent({ runId: "run-1" }, {
    onEvent: ({ event }) => { seen.push(event.type); },
    onRunErrorEvent: ({ event }) => { errors.push(event); },
  });
  assert.deepEqual(errors, []);
  assert.equal(seen[0], "RUN_STARTED");
  assert.equal(seen.at(-1), "RUN_FINISHED");
  const start = seen.indexOf("TOOL_CALL_START");
  assert.ok(start > 0, `a tool call in ${seen}`);
  assert.deepEqual(seen.slice(start, start + 4), ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT"]);
  assert.ok(seen.indexOf("TEXT_MESSAGE_START") > start, "the answer follows the tool result");

  // The agent's own view of the conversation, built from the events.
  const call = agent.messages.find((m) => m.role === "assistant" && m.toolCalls?.length);
  assert.equal(call.toolCalls[0].function.name, "get_all_orders");
  const result = agent.messages.find((m) => m.role === "tool");
  assert.equal(result.toolCallId, call.toolCalls[0].id);
  const answer = agent.messages.filter((m) => m.role === "assistant" && m.content).at(-1);
  assert.match(answer.content, /ORD-/);

  agent.addMessage({ id: "u2", role: "user", content: "Thanks" });
  const second = [];
  await agent.runAgent({ runId: "run-2" }, { onEvent: ({ event }) => { second.push(event.type); } });
  assert.equal(second[0], "RUN_STARTED");
  assert.equal(second.at(-1), "RUN_FINISHED");
  const kept = await history(thread, "default");
  assert.equal(kept.message_count, 4);
  assert.equal(kept.messages[2].content, "Thanks");
});

test("a bad thread id is refused before any stream", async () => {
  const agent = new HttpAgent({ url: `${BASE}/api/v1/ag-ui`, threadId: "not a valid id" });
  agent.addMessage({ id: "u1", role: "user", content: "Hello" });
  await assert.rejects(agent.runAgent({ runId: "run-x" }), /400|validation_error/);
});

test("while a person holds the thread, a run shows the handoff and stores the message for them", async () => {
  const thread = `agui-held-${Date.now()}`;
  const agent = new HttpAgent({ url: `${BASE}/api/v1/ag-ui`, threadId: thread, headers: { "X-Tenant-ID": "default" } });
  agent.addMessage({ id: "u1", role: "user", content: "I want to talk to a person" });
  const first = [];
  await agent.runAgent({ runId: "run-1" }, { onCustomEvent: ({ event }) => { first.push(event); } });
  assert.equal(first.length, 1, "the model's handoff is a CUSTOM event");
  assert.equal(first[0].name, "handoff");
  assert.equal(first[0].value.mode, "waiting_for_human");

  agent.addMessage({ id: "u2", role: "user", content: "Hello? Anyone there?" });
  const seen = [];
  const custom = [];
  let finished;
  await agent.runAgent({ runId: "run-2" }, {
    onEvent: ({ event }) => { seen.push(event.type); },
    onCustomEvent: ({ event }) => { custom.push(event); },
    onRunFinishedEvent: ({ event }) => { finished = event; },
  });
  assert.deepEqual(seen, ["RUN_STARTED", "CUSTOM", "RUN_FINISHED"]);
  assert.equal(custom[0].value.mode, "waiting_for_human");
  assert.equal(finished.result.status, "with_human");
  const kept = await history(thread, "default");
  assert.equal(kept.mode, "waiting_for_human");
  assert.equal(kept.messages.at(-1).content, "Hello? Anyone there?");
});
