// The operator console: a plain script over the public API (no framework, no build step).
// Queue: GET /api/v1/handoffs. Claim, reply, hand back: POST /api/v1/handoffs/{session}/claim |
// messages | release. Transcript: the session's history, then its session stream
// (GET /api/v1/sessions/{id}/events). The key is kept in sessionStorage: this tab only.
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

async function readSse(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let match;
    while ((match = /\r\n\r\n|\n\n|\r\r/.exec(buffer))) {
      const block = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      let id = null;
      const data = [];
      for (const line of block.split(/\r\n|\n|\r/)) {
        if (line.startsWith("id:")) id = line.slice(3).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(id, JSON.parse(data.join("\n")));
    }
  }
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
  $("reply").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  $("release").addEventListener("click", release);
  if (apiKey()) signIn();
});
