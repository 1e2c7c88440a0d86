// The playground: a plain script over the public API (no framework, no build step).
// Chat: POST /api/v1/chat/stream (SSE). Resume: GET .../turns/{turn}/events with Last-Event-ID.
// Stop: POST .../turns/{turn}/cancel. Sessions: GET /api/v1/sessions, DELETE /api/v1/sessions/{id}.
// A person's replies (human handoff) arrive on the session stream GET /api/v1/sessions/{id}/events.
// Every request goes through fetch() (never EventSource, which cannot send headers), so an API key
// rides on each one as "Authorization: Bearer", stream resumes included. The key is kept in
// sessionStorage: this tab only, gone when it closes, never in localStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

const state = {
  turn: null,        // {id, lastEventId, bubble, text, finished, controller, tenant, session}
  known: null,       // session ids the service listed (null before the first list), to skip a new one's history
  follow: null,      // the session stream's AbortController
};
const KEY_ITEM = "msev15.apikey";

function apiKey() { return $("apikey").value.trim(); }
// The credential on every request; with a key the service takes the tenant from it.
function withAuth(headers = {}) {
  const key = apiKey();
  return key ? {...headers, "Authorization": `Bearer ${key}`} : headers;
}
function tenantQuery(extra = {}) {
  return q(apiKey() ? extra : {tenant_id: tenant(), ...extra});
}
function tenant() { return $("tenant").value.trim() || "default"; }
function session() { return $("session").value.trim(); }
function newSessionId() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
function q(params) { return "?" + new URLSearchParams(params).toString(); }
function setStatus(text) { $("status").textContent = text; }
function remember() {
  localStorage.setItem("msev15.tenant", tenant());
  localStorage.setItem("msev15.session", session());
}

async function apiError(resp) {
  let said;
  try {
    const body = await resp.json();
    said = `${body.error}: ${body.message}`;
  } catch {
    said = `HTTP ${resp.status}`;
  }
  if (resp.status === 401) {
    return apiKey() ? `The service did not accept this API key (${said}). Check the key in "API key".`
                    : `The service needs an API key: enter one in "API key" (${said}).`;
  }
  if (resp.status === 403) return `This API key may not do that (${said}).`;
  return said;
}

// --- rendering -------------------------------------------------------------------------------

function bubble(role, text, author) {
  const li = document.createElement("li");
  li.className = author ? `${role} human` : role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role === "user" ? "You" : author ? `${author.name} (support team)` : "Agent";
  const body = document.createElement("div");
  body.className = "body";
  li.append(label, body);
  if (text) appendText(body, text);
  $("log").append(li);
  li.scrollIntoView({block: "end"});
  return body;
}

function appendText(body, text) {
  let last = body.lastElementChild;
  if (!last || !last.classList.contains("text")) {
    last = document.createElement("span");
    last.className = "text";
    body.append(last);
  }
  last.textContent += text;
}

function toolCard(body, event) {
  const card = document.createElement("div");
  card.className = "tool";
  card.dataset.callId = event.call_id;
  const title = document.createElement("strong");
  title.textContent = `Tool: ${event.name}`;
  const args = document.createElement("code");
  args.textContent = " " + JSON.stringify(event.arguments ?? {});
  const result = document.createElement("span");
  result.className = "result pending";
  result.textContent = " … running";
  card.append(title, args, document.createElement("br"), result);
  body.append(card);
}

function toolResult(body, event) {
  const card = body.querySelector(`.tool[data-call-id="${CSS.escape(event.call_id)}"]`);
  if (!card) return;
  const result = card.querySelector(".result");
  result.className = "result " + (event.ok ? "ok" : "failed");
  result.textContent = event.ok ? "✓ done" : "✗ failed";
}

// --- streams ---------------------------------------------------------------------------------

// readSse(resp, onEvent): sse.js, shared with the operator console.

// Thumbs up / down under a completed answer: POST .../turns/{turn_id}/feedback. Rating again replaces.
function thumbs(turn, turnId) {
  const box = document.createElement("div");
  box.className = "feedback";
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", "Rate this answer");
  const buttons = [["up", "👍", "Good answer"], ["down", "👎", "Bad answer"]].map(([rating, face, label]) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.dataset.rating = rating;
    button.textContent = face;
    button.setAttribute("aria-label", label);
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => rate(turn, turnId, rating, buttons));
    return button;
  });
  box.append(...buttons);
  turn.bubble.append(box);
}

async function rate(turn, turnId, rating, buttons) {
  const path = `/api/v1/sessions/${encodeURIComponent(turn.session)}/turns/${encodeURIComponent(turnId)}/feedback`;
  let resp;
  try {
    resp = await fetch(path + (turn.keyed ? "" : q({tenant_id: turn.tenant})), {
      method: "POST", headers: withAuth({"Content-Type": "application/json"}), body: JSON.stringify({rating}),
    });
  } catch (err) {
    setStatus("Could not reach the service: the rating was not sent.");
    return;
  }
  if (!resp.ok) {
    setStatus(await apiError(resp));
    return;
  }
  for (const button of buttons) button.setAttribute("aria-pressed", String(button.dataset.rating === rating));
  setStatus("Thanks for the feedback.");
}

function handle(turn, id, event) {
  if (id) turn.lastEventId = id;
  switch (event.type) {
    case "token": appendText(turn.bubble, event.content); break;
    case "tool_call": toolCard(turn.bubble, event); break;
    case "tool_result": toolResult(turn.bubble, event); break;
    case "input_required": inputRequired(turn, event); break;  // approvals.js
    case "handoff": showMode(event.mode); break;
    case "done":
      turn.finished = true;
      if (event.status === "waiting") setStatus("Waiting for your decision.");
      else if (event.status !== "with_human") setStatus("");  // with a person: the handoff said who answers
      if (event.turn_id && !event.status) thumbs(turn, event.turn_id);  // only a finished answer is rated
      break;
    case "error": {
      turn.finished = true;
      const note = document.createElement("span");
      note.className = "answer-error";
      note.textContent = event.error === "cancelled" ? "Stopped." : `Error (${event.error}): ${event.message}`;
      turn.bubble.append(note);
      setStatus(event.error === "cancelled" ? "Stopped." : "The answer failed.");
      break;
    }
  }
  turn.bubble.parentElement.scrollIntoView({block: "end"});
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

function online() {
  return navigator.onLine ? Promise.resolve() : new Promise((resolve) => {
    window.addEventListener("online", () => resolve(), {once: true});
  });
}

// Follows the turn after a dropped connection, from the last event seen, until its end.
async function resume(turn) {
  let delay = 250;
  while (!turn.finished) {
    setStatus("Connection lost: resuming…");
    await online();
    turn.controller = new AbortController();
    try {
      const url = `/api/v1/sessions/${encodeURIComponent(turn.session)}/turns/${encodeURIComponent(turn.id)}/events`
        + (turn.keyed ? "" : q({tenant_id: turn.tenant}));
      const headers = turn.lastEventId ? {"Last-Event-ID": turn.lastEventId} : {};
      const resp = await fetch(url, {headers: withAuth(headers), signal: turn.controller.signal, cache: "no-store"});
      if (resp.status === 404) {
        setStatus("The answer is no longer available; showing the history.");
        await loadHistory();
        return;
      }
      if (!resp.ok) throw new Error(await apiError(resp));
      setStatus("Answering…");
      await readSse(resp, (id, event) => handle(turn, id, event));
      delay = 250;
    } catch (err) {
      if (turn.finished) break;
      await sleep(delay);
      delay = Math.min(delay * 2, 4000);
    }
  }
}

async function send(text) {
  const sid = session();
  if (!ID_RE.test(sid) || !ID_RE.test(tenant())) {
    setStatus("Tenant and session must be 1–128 letters, digits, '.', '_' or '-'.");
    return;
  }
  remember();
  bubble("user", text);
  const turn = {id: null, lastEventId: null, bubble: bubble("assistant", ""), finished: false,
                controller: new AbortController(), tenant: tenant(), session: sid, keyed: Boolean(apiKey())};
  state.turn = turn;
  $("send").disabled = true;
  $("stop").disabled = false;
  setStatus("Answering…");
  try {
    let resp;
    try {
      resp = await fetch("/api/v1/chat/stream", {
        method: "POST", signal: turn.controller.signal,
        headers: withAuth({"Content-Type": "application/json", "Accept": "text/event-stream"}),
        body: JSON.stringify(turn.keyed ? {session_id: sid, message: text}
                                        : {session_id: sid, tenant_id: turn.tenant, message: text}),
      });
    } catch (err) {
      turn.finished = true;
      turn.bubble.parentElement.remove();
      setStatus("Could not reach the service: the message was not sent.");
      return;
    }
    if (!resp.ok) {
      turn.finished = true;
      turn.bubble.parentElement.remove();
      setStatus(await apiError(resp));
      return;
    }
    turn.id = resp.headers.get("X-Turn-ID");
    try {
      await readSse(resp, (id, event) => handle(turn, id, event));
    } catch (err) {
      // A dropped connection (or going offline): the turn goes on at the server.
    }
    if (!turn.finished) await resume(turn);
  } finally {
    if (state.turn === turn) state.turn = null;
    $("send").disabled = false;
    $("stop").disabled = true;
    refreshSessions();
  }
}

async function stop() {
  const turn = state.turn;
  if (!turn || !turn.id) return;
  $("stop").disabled = true;
  setStatus("Stopping…");
  const url = `/api/v1/sessions/${encodeURIComponent(turn.session)}/turns/${encodeURIComponent(turn.id)}/cancel`
    + (turn.keyed ? "" : q({tenant_id: turn.tenant}));
  const resp = await fetch(url, {method: "POST", headers: withAuth()});
  if (!resp.ok && resp.status !== 409) setStatus(await apiError(resp));
}

// --- sessions --------------------------------------------------------------------------------

async function loadHistory() {
  $("log").replaceChildren();
  const sid = session();
  if (!ID_RE.test(sid) || !ID_RE.test(tenant())) return;
  // A session the service did not list has no history yet: asking would only log a 404.
  if (state.known && !state.known.has(sid)) { await loadPending(); return; }
  const resp = await fetch(`/api/v1/sessions/${encodeURIComponent(sid)}/history` + tenantQuery(),
                           {headers: withAuth()});
  if (resp.status === 404) { await loadPending(); return; }  // a new session (or one whose first turn waits)
  if (!resp.ok) { setStatus(await apiError(resp)); return; }
  const history = await resp.json();
  for (const message of history.messages) bubble(message.role, message.content, message.author);
  showMode(history.mode);
  await loadPending();  // approvals.js: calls that still wait, as cards
}

const MODE_TEXT = {
  waiting_for_human: "Waiting for a person from the support team: they will reply here.",
  human: "A person from the support team is answering.",
  agent: "",
};
function showMode(mode) {
  if (mode in MODE_TEXT) setStatus(MODE_TEXT[mode]);
}

// Follows the session stream while the session is open here: a person's replies, mode changes.
async function follow() {
  if (state.follow) state.follow.abort();
  const sid = session();
  if (!ID_RE.test(sid) || !ID_RE.test(tenant())) return;
  const controller = state.follow = new AbortController();
  let lastId = null;
  while (!controller.signal.aborted) {
    try {
      const headers = withAuth(lastId ? {"Last-Event-ID": lastId} : {});
      const resp = await fetch(`/api/v1/sessions/${encodeURIComponent(sid)}/events` + tenantQuery(),
                               {headers, signal: controller.signal, cache: "no-store"});
      if (!resp.ok) return;  // an old service, or no access: the playground works without it
      await readSse(resp, (id, event) => {
        if (id) lastId = id;
        if (event.type === "human_message") bubble("assistant", event.content, event.author);
        else if (event.type === "mode") {
          showMode(event.mode);
          if (event.message) bubble("assistant", event.message);
        }
      });
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    await online();
    await sleep(1000);  // the stream ended or dropped: reconnect after Last-Event-ID, gently
  }
}

async function refreshSessions() {
  const list = $("sessions");
  if (!ID_RE.test(tenant())) return;
  const resp = await fetch("/api/v1/sessions" + tenantQuery({limit: 50}), {headers: withAuth()});
  if (!resp.ok) { state.known = null; setStatus(await apiError(resp)); return; }
  const {sessions} = await resp.json();
  // A full page may leave sessions out: then every session's history is asked for.
  state.known = sessions.length < 50 ? new Set(sessions.map((item) => item.session_id)) : null;
  list.replaceChildren();
  if (!sessions.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "No sessions yet.";
    list.append(li);
  }
  for (const item of sessions) {
    const li = document.createElement("li");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.textContent = `${item.session_id} (${item.message_count})`;
    open.setAttribute("aria-label", `Open session ${item.session_id}, ${item.message_count} messages`);
    if (item.session_id === session()) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => switchTo(item.session_id));
    const del = document.createElement("button");
    del.type = "button";
    del.className = "delete";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete session ${item.session_id}`);
    del.addEventListener("click", () => deleteSession(item.session_id));
    li.append(open, del);
    list.append(li);
  }
}

async function switchTo(sid) {
  $("session").value = sid;
  remember();
  setStatus("");
  await refreshSessions();
  await loadHistory();
  follow();
}

function keyChanged() {
  const key = apiKey();
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
  $("tenant").disabled = Boolean(key);
  setStatus("");
  switchTo(session());
}

async function deleteSession(sid) {
  const resp = await fetch(`/api/v1/sessions/${encodeURIComponent(sid)}` + tenantQuery(),
                           {method: "DELETE", headers: withAuth()});
  if (!resp.ok && resp.status !== 404) { setStatus(await apiError(resp)); return; }
  setStatus(`Deleted session ${sid}.`);
  if (sid === session()) $("log").replaceChildren();
  await refreshSessions();
}

// --- wiring ----------------------------------------------------------------------------------

window.addEventListener("offline", () => {
  // Some browsers keep a dead stream open for minutes: drop it now and resume when back online.
  if (state.turn && state.turn.controller) state.turn.controller.abort();
});

document.addEventListener("DOMContentLoaded", () => {
  $("tenant").value = localStorage.getItem("msev15.tenant") || "default";
  $("session").value = localStorage.getItem("msev15.session") || newSessionId();
  $("chat").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("message").value.trim();
    if (!text || state.turn) return;
    $("message").value = "";
    send(text);
  });
  $("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("chat").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-session").addEventListener("click", () => switchTo(newSessionId()));
  $("refresh").addEventListener("click", refreshSessions);
  $("who").addEventListener("submit", (e) => e.preventDefault());
  $("tenant").addEventListener("change", () => switchTo(session()));
  $("session").addEventListener("change", () => switchTo(session()));
  $("apikey").value = sessionStorage.getItem(KEY_ITEM) || "";
  $("tenant").disabled = Boolean(apiKey());
  $("apikey").addEventListener("change", keyChanged);
  switchTo(session());
});
