// Approval cards: calls that wait for a person (TOOL_APPROVAL) or for the client (client tools).
// A card shows the tool and its arguments with Approve / Reject (or an output box for a client
// tool). Cards come from the stream's `input_required` events and, after a reload, from
// GET /api/v1/sessions/{id}/pending. A decision is POST .../pending/{call_id}; the step's last
// decision starts the continuation turn, followed here like any answer.
// Uses playground.js's helpers (bubble, handle, readSse, q, tenantQuery, withAuth, apiKey, tenant, session,
// setStatus, apiError): with an API key every request carries it and the tenant comes from the key.
"use strict";

function pendingUrl(sid, callId) {
  const base = `/api/v1/sessions/${encodeURIComponent(sid)}/pending`;
  return (callId ? `${base}/${encodeURIComponent(callId)}` : base) + tenantQuery();
}

function approvalCard(body, call) {
  if (document.querySelector(`.approval[data-call-id="${CSS.escape(call.call_id)}"]`)) return;
  const card = document.createElement("div");
  card.className = "approval";
  card.dataset.callId = call.call_id;
  card.setAttribute("role", "group");
  const title = document.createElement("strong");
  title.textContent = call.kind === "approval" ? `Approve ${call.name}?` : `Waiting for your tool ${call.name}`;
  card.setAttribute("aria-label", title.textContent);
  const args = document.createElement("code");
  args.textContent = JSON.stringify(call.arguments ?? {});
  const actions = document.createElement("div");
  actions.className = "decide";
  if (call.kind === "approval") {
    const reason = document.createElement("input");
    reason.className = "reason";
    reason.placeholder = "Reason (optional, told to the agent)";
    reason.setAttribute("aria-label", `Reason for ${call.name}`);
    const approve = document.createElement("button");
    approve.type = "button";
    approve.textContent = "Approve";
    approve.addEventListener("click", () => decide(card, {approve: true}));
    const reject = document.createElement("button");
    reject.type = "button";
    reject.className = "secondary";
    reject.textContent = "Reject";
    reject.addEventListener("click", () => decide(card, {approve: false, ...(reason.value.trim() ? {reason: reason.value.trim()} : {})}));
    actions.append(reason, approve, reject);
  } else {
    const output = document.createElement("textarea");
    output.rows = 2;
    output.placeholder = "The tool's output (JSON or text)";
    output.setAttribute("aria-label", `Output of ${call.name}`);
    const send = document.createElement("button");
    send.type = "button";
    send.textContent = "Send output";
    send.addEventListener("click", () => {
      let value = output.value;
      try { value = JSON.parse(value); } catch { /* plain text */ }
      decide(card, {output: value});
    });
    actions.append(output, send);
  }
  const outcome = document.createElement("span");
  outcome.className = "outcome";
  outcome.setAttribute("role", "status");
  card.append(title, document.createElement("br"), args, actions, outcome);
  body.append(card);
}

async function decide(card, decision) {
  for (const button of card.querySelectorAll("button")) button.disabled = true;
  const sid = session();
  const resp = await fetch(pendingUrl(sid, card.dataset.callId), {
    method: "POST", headers: withAuth({"Content-Type": "application/json"}), body: JSON.stringify(decision),
  });
  const outcome = card.querySelector(".outcome");
  if (!resp.ok) {
    outcome.textContent = await apiError(resp);
    if (resp.status !== 404 && resp.status !== 409) for (const b of card.querySelectorAll("button")) b.disabled = false;
    return;
  }
  const {turn_id: turnId} = await resp.json();
  card.querySelector(".decide").remove();
  outcome.textContent = "output" in decision ? "Output sent." : (decision.approve ? "Approved." : "Rejected.");
  card.classList.add(decision.approve === false ? "rejected" : "decided");
  if (turnId) await followContinuation(sid, turnId);
}

async function followContinuation(sid, turnId) {
  const turn = {id: turnId, lastEventId: null, bubble: bubble("assistant", ""), finished: false,
                controller: new AbortController(), tenant: tenant(), session: sid, keyed: Boolean(apiKey())};
  setStatus("Answering…");
  const url = `/api/v1/sessions/${encodeURIComponent(sid)}/turns/${encodeURIComponent(turnId)}/events`
    + (turn.keyed ? "" : q({tenant_id: turn.tenant}));
  const resp = await fetch(url, {headers: withAuth(), cache: "no-store", signal: turn.controller.signal});
  if (!resp.ok) { setStatus(await apiError(resp)); return; }
  await readSse(resp, (id, event) => handle(turn, id, event));
}

// Called by playground.js for each `input_required` event and after the history is loaded.
function inputRequired(turn, event) { approvalCard(turn.bubble, event); }

async function loadPending() {
  const sid = session();
  const resp = await fetch(pendingUrl(sid), {headers: withAuth()});
  if (!resp.ok) return;
  const {pending} = await resp.json();
  if (!pending.length) return;
  const body = bubble("assistant", "");
  for (const call of pending) approvalCard(body, call);
  setStatus("Waiting for your decision.");
}
