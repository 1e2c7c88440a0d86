// The operator console: a plain script over the public API (no framework, no build step).
// Queue: GET /api/v1/handoffs. Claim, reply, hand back: POST /api/v1/handoffs/{session}/claim |
// messages | release. Transcript: the session's history, then its session stream
// (GET /api/v1/sessions/{id}/events). Pending tool calls: GET .../pending and the stream's
// `input_required` events; a decision is POST .../pending/{call_id} (who may decide follows
// APPROVAL_BY on the server). readSse() is sse.js, shared with the playground.
// The key is kept in sessionStorage: this tab only.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_ITEM = "msev15.operator-key";
const state = {open: null, follow: null, timer: null};

function apiKey() { return $("apikey").value.trim(); }
function withAuth(headers = {}) {
  const key = apiKey();
  return key ? {...headers, "Authorization": `Bearer ${key}`} : headers;
}
function tenantQuery(extra = {}) {
  const params = apiKey() ? extra : {tenant_id: $("tenant").value.trim() || "default", ...extra};
  return "?" + new URLSearchParams(params).toString();
}
function setStatus(text) { $("status").textContent = text; }
const enc = encodeURIComponent;

async function apiError(resp) {
  try {
    const body = await resp.json();
    return `${body.error}: ${body.message}`;
  } catch {
    return `HTTP ${resp.status}`;
  }
}

async function api(method, path, body) {
  const headers = withAuth(body ? {"Content-Type": "application/json"} : {});
  return fetch(path + tenantQuery(), {method, headers, body: body ? JSON.stringify(body) : undefined});
}

// --- the queue -------------------------------------------------------------------------------

function waited(seconds) {
  return seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

function entry(item, actionText, action) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary";
  button.textContent = actionText;
  button.setAttribute("aria-label", `${actionText} ${item.session_id}`);
  button.dataset.session = item.session_id;
  button.addEventListener("click", () => action(item.session_id));
  const title = document.createElement("strong");
  title.textContent = ` ${item.session_id} `;
  const reason = document.createElement("span");
  reason.className = "reason";
  reason.textContent = item.summary ? `${item.reason}: ${item.summary}` : item.reason;
  li.append(button, title);
  if (item.status === "waiting") {
    const time = document.createElement("span");
    time.className = "waited";
    time.textContent = `waiting ${waited(item.waiting_seconds)}`;
    li.append(time);
  }
  li.append(reason);
  return li;
}

function fill(list, items, actionText, action) {
  list.replaceChildren(...items.map((item) => entry(item, actionText, action)));
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "Nobody.";
    list.append(li);
  }
}

async function refresh() {
  const waiting = await fetch("/api/v1/handoffs" + tenantQuery({status: "waiting"}), {headers: withAuth()});
  if (!waiting.ok) { setStatus(await apiError(waiting)); return; }
  fill($("queue"), (await waiting.json()).handoffs, "Claim", claim);
  const active = await fetch("/api/v1/handoffs" + tenantQuery({status: "active"}), {headers: withAuth()});
  if (active.ok) fill($("mine"), (await active.json()).handoffs, "Open", open);
}

async function takeOver() {
  const sid = $("takeover-session").value.trim();
  if (sid) await claim(sid);
}

async function claim(sid) {
  const resp = await api("POST", `/api/v1/handoffs/${enc(sid)}/claim`, null);
  if (!resp.ok) { setStatus(await apiError(resp)); await refresh(); return; }
  await open(sid);
  await refresh();
}

// --- the conversation ------------------------------------------------------------------------

function bubble(role, text, author) {
  const li = document.createElement("li");
  li.className = role === "user" ? "user customer" : author ? "assistant human" : "assistant";
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role === "user" ? "Customer" : author ? author.name : "Agent";
  const body = document.createElement("div");
  body.className = "body";
  const text_ = document.createElement("span");
  text_.className = "text";
  text_.textContent = text;
  body.append(text_);
  li.append(label, body);
  $("log").append(li);
  li.scrollIntoView({block: "end"});
  return text_;
}

// --- pending tool calls ----------------------------------------------------------------------

function note(text, className) {
  const li = document.createElement("li");
  li.className = `note ${className || ""}`.trim();
  li.textContent = text;
  $("log").append(li);
  li.scrollIntoView({block: "end"});
}

function pendingCard(sid, call) {
  if (call.kind !== "approval") return;  // a client tool's output comes from the customer's client
  if (document.querySelector(`#log .approval[data-call-id="${CSS.escape(call.call_id)}"]`)) return;
  const li = document.createElement("li");
  li.className = "approval";
  li.dataset.callId = call.call_id;
  li.setAttribute("role", "group");
  const title = document.createElement("strong");
  title.textContent = `Approve ${call.name}?`;
  li.setAttribute("aria-label", title.textContent);
  const args = document.createElement("code");
  args.textContent = JSON.stringify(call.arguments ?? {});
  const actions = document.createElement("div");
  actions.className = "decide";
  const reason = document.createElement("input");
  reason.className = "reason";
  reason.placeholder = "Reason (optional, told to the agent)";
  reason.setAttribute("aria-label", `Reason for ${call.name}`);
  const approve = document.createElement("button");
  approve.type = "button";
  approve.textContent = "Approve";
  const reject = document.createElement("button");
  reject.type = "button";
  reject.className = "secondary";
  reject.textContent = "Reject";
  const because = () => (reason.value.trim() ? {reason: reason.value.trim()} : {});
  approve.addEventListener("click", () => decide(sid, li, {approve: true, ...because()}));
  reject.addEventListener("click", () => decide(sid, li, {approve: false, ...because()}));
  actions.append(reason, approve, reject);
  const outcome = document.createElement("span");
  outcome.className = "outcome";
  outcome.setAttribute("role", "status");
  li.append(title, document.createElement("br"), args, actions, outcome);
  $("log").append(li);
  li.scrollIntoView({block: "end"});
}

async function decide(sid, card, decision) {
  for (const button of card.querySelectorAll("button")) button.disabled = true;
  const resp = await api("POST", `/api/v1/sessions/${enc(sid)}/pending/${enc(card.dataset.callId)}`, decision);
  const outcome = card.querySelector(".outcome");
  if (!resp.ok) {  // 403: APPROVAL_BY does not let this key decide; 404/409: decided or gone already
    outcome.textContent = await apiError(resp);
    if (resp.status !== 404 && resp.status !== 409) for (const b of card.querySelectorAll("button")) b.disabled = false;
    return;
  }
  card.querySelector(".decide").remove();
  outcome.textContent = decision.approve ? "Approved." : "Rejected.";
  card.classList.add(decision.approve ? "decided" : "rejected");
  // The continuation turn's events arrive on the session stream, already followed.
}

async function loadPending(sid) {
  const resp = await api("GET", `/api/v1/sessions/${enc(sid)}/pending`, null);
  if (!resp.ok) return;
  for (const call of (await resp.json()).pending) pendingCard(sid, call);
}

function editable(yes) {
  for (const id of ["message", "send", "release", "note"]) $(id).disabled = !yes;
}

async function open(sid) {
  if (state.follow) state.follow.abort();
  state.open = sid;
  $("conversation-title").textContent = `Conversation ${sid}`;
  $("log").replaceChildren();
  editable(true);
  const controller = state.follow = new AbortController();
  // The stream first ("from now on"), then the history: nothing is lost (a message arriving in
  // between may show twice).
  const stream = fetch(`/api/v1/sessions/${enc(sid)}/events` + tenantQuery(),
                       {headers: withAuth(), signal: controller.signal, cache: "no-store"});
  const history = await api("GET", `/api/v1/sessions/${enc(sid)}/history`, null);
  if (history.ok) {
    for (const m of (await history.json()).messages) bubble(m.role, m.content, m.author);
  }
  await loadPending(sid);
  let answer = null;  // the agent's answer being streamed, when the agent has the session
  try {
    const resp = await stream;
    if (!resp.ok) { setStatus(await apiError(resp)); return; }
    await readSse(resp, (id, event) => {
      switch (event.type) {
        case "customer_message": bubble("user", event.content); break;
        case "human_message": bubble("assistant", event.content, event.author); break;
        case "token":
          if (!answer) answer = bubble("assistant", "");
          answer.textContent += event.content;
          break;
        case "input_required": pendingCard(sid, event); answer = null; break;
        case "tool_result": note(`${event.name}: ${event.ok ? "done" : "failed"}`, event.ok ? "ok" : "failed"); break;
        case "done": case "error": answer = null; break;
        case "mode":
          setStatus({agent: "Handed back to the assistant.", human: `Held by ${event.by.name || "an operator"}.`,
                     waiting_for_human: "Waiting for an operator."}[event.mode] + (event.message ? ` ${event.message}` : ""));
          if (event.mode === "agent") editable(false);
          break;
      }
    });
  } catch (err) {
    // closed: another conversation was opened, or the page is leaving
  }
}

async function send() {
  const text = $("message").value.trim();
  if (!text || !state.open) return;
  const resp = await api("POST", `/api/v1/handoffs/${enc(state.open)}/messages`, {content: text});
  if (!resp.ok) { setStatus(await apiError(resp)); return; }
  $("message").value = "";  // the message appears when the session stream brings it back
}

async function release() {
  if (!state.open) return;
  const note = $("note").value.trim();
  const resp = await api("POST", `/api/v1/handoffs/${enc(state.open)}/release`, note ? {note} : null);
  if (!resp.ok) { setStatus(await apiError(resp)); return; }
  $("note").value = "";
  editable(false);
  setStatus("Handed back to the assistant.");
  await refresh();
}

function signIn() {
  const key = apiKey();
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
  $("tenant").disabled = Boolean(key);
  setStatus("");
  refresh();
  if (state.timer) clearInterval(state.timer);
  state.timer = setInterval(refresh, 5000);  // waiting times move; new handoffs arrive
}

document.addEventListener("DOMContentLoaded", () => {
  $("apikey").value = sessionStorage.getItem(KEY_ITEM) || "";
  $("signin").addEventListener("submit", (e) => { e.preventDefault(); signIn(); });
  $("refresh").addEventListener("click", refresh);
  $("takeover").addEventListener("submit", (e) => { e.preventDefault(); takeOver(); });
  $("reply").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  $("release").addEventListener("click", release);
  if (apiKey()) signIn();
});
