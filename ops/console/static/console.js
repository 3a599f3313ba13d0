// The hub's console: every number and state comes from the management API (/api/v1), called with
// the token the operator signs in with (kept for this browser tab only, in sessionStorage).
// Elements are built with textContent, never innerHTML: event data and error texts are untrusted.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "bus-console-token";
const POLL_MS = 2000; // topology and subscriber pages
const LETTERS_POLL_MS = 10000; // dead-letter counts read every dead-letter topic: less often
const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let timers = [];
// Bumped at every navigation: a page whose API call returns after the operator moved on must not
// draw over the new page, nor start refreshing itself again.
let generation = 0;
let lettersByName = null; // open dead letters per subscriber, refreshed every LETTERS_POLL_MS
let lettersAt = 0;

// -- small helpers -----------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    // A handler's failure (the hub refused, or could not be reached) is said on the status line, not lost.
    if (name.startsWith("on")) el.addEventListener(name.slice(2), (e) => Promise.resolve().then(() => value(e)).catch(failed));
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
  for (const child of children.flat()) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}
// The page's content: children that are null or false (a section with nothing to show) are left out.
function show(...children) {
  main.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
function say(text, isError) {
  statusLine.textContent = text || "";
  statusLine.className = isError ? "error" : "";
}
function clearTimers() {
  timers.forEach(clearInterval);
  timers = [];
}
function every(ms, fn) {
  timers.push(setInterval(fn, ms));
}
const token = () => sessionStorage.getItem(TOKEN_KEY);

class Refused extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(API + path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    if (answer.status === 401) signIn(body.detail || "the hub refused the token");
    throw new Refused(answer.status, body.detail || answer.statusText);
  }
  return body;
}

const STATE_CLASS = {
  running: "ok", healthy: "ok", delivered: "ok",
  retrying: "warn", starting: "warn", in_flight: "warn", replayed: "warn", not_running_here: "warn",
  circuit_open: "bad", unhealthy: "bad", dead_lettered: "bad", refused: "bad",
  paused: "paused", purged: "paused", standby: "paused",
};
const stateClass = (state) => STATE_CLASS[state] || "warn";
const badge = (state, text) => h("span", { class: `badge s-${stateClass(state)}` }, text || state.replaceAll("_", " "));
// Who paused it, when, and why (the reason the operator gave), in one line.
const pausedText = (n) => n.paused_by
  ? [`${n.paused_by}`, n.paused_at ? ` at ${n.paused_at}` : "", n.paused_reason ? `: ${n.paused_reason}` : ""].join("")
  : "–";
// The reason typed for a pause is kept across the page's redraws (the page redraws every few seconds).
function reasonField(kept) {
  return h("label", {}, "Reason (optional) ",
    h("input", { id: "pause-reason", type: "text", maxlength: 500, value: kept.text,
      placeholder: "e.g. ERP maintenance until 14:00, ticket OPS-123",
      oninput: (e) => { kept.text = e.target.value; } }));
}
const typing = () => ["pause-reason", "redeliver-since", "redeliver-until", "redeliver-keys", "backfill-since", "backfill-until",
  "backfill-keys"].includes(document.activeElement?.id);
// A datetime-local field's value (the browser's own zone) as RFC 3339 in UTC; "" stays "".
const utc = (local) => (local ? new Date(local).toISOString() : "");
// What a redelivery left out, in words (the API's counts).
const leftOutText = (done) => [
  [done.dead_lettered, "dead-lettered (replay or purge those as dead letters)"],
  [done.superseded, "superseded: a later event of the same key came after"],
  [done.earlier_copies, "already sent again by an earlier redelivery"],
  [done.not_settled, "still on their way"],
].filter(([count]) => count).map(([count, why]) => `${count} ${why}`).join("; ");
// What a backfill left out, in words (the API's counts).
const backfillLeftOutText = (done) => [
  [done.already_delivered, "already delivered"],
  [done.superseded, "superseded: it was delivered a later event of the same key"],
  [done.not_routed, "not routed yet (the router gives them to every subscriber)"],
  [done.failed, `a route failed on them (${(done.failed_events || []).slice(0, 3).map((x) => `${x.event_id}: ${x.reason}`).join("; ")})`],
].filter(([count]) => count).map(([count, why]) => `${count} ${why}`).join("; ");
// The two actions on a window of time, worded for each (the same fields, a dry run confirmed first).
const WINDOW_ACTIONS = {
  redeliver: {
    title: "Send again what it was delivered",
    about: "For a target that lost what it got (restored from a backup, an import rolled back): the events it was "
      + "delivered in the window are sent again, in their order, through every replica. Dead letters and events a later "
      + "event of their key came after are left out.",
    button: "Send again…", yes: "Yes, send again", confirm: "Confirm sending again", missing: "Give the time since when the target lost what it was delivered.",
    reading: "Reading what the window holds…", doing: "Sending again…",
    would: (d) => `${d.to_send} of the ${d.matched} event(s) delivered in the window would be sent again`,
    did: (d, name) => `Sent again ${d.sent} event(s) to ${name}.`,
    left: leftOutText,
  },
  backfill: {
    title: "Give it the history (a system that joined later)",
    about: "The events its routes give it from what reached the hub in the window, before it could receive them, are "
      + "written for it alone, in their order. What it already has, and older events of a key it already has a newer "
      + "event of, are left out.",
    button: "Backfill…", yes: "Yes, backfill", confirm: "Confirm the backfill", missing: "Give the time since when it should have the history.",
    reading: "Routing what the window holds…", doing: "Backfilling…",
    would: (d) => `${d.to_send} of the ${d.matched} event(s) its routes (${d.routes.join(", ")}) give it from the window would be written`,
    did: (d, name) => `Backfilled ${d.sent} event(s) to ${name}.`,
    left: backfillLeftOutText,
  },
};
const needsAttention = (s) => !["healthy", "not_running_here"].includes(s.state) || (lettersByName && lettersByName[s.name] > 0);

// -- sign in -----------------------------------------------------------------------------------
function signIn(why) {
  generation += 1;
  clearTimers();
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  show(
    h("h2", {}, "Sign in"),
    h("p", {}, "The console reads the hub through its management API. Enter a token from ops.tokens in the hub's config."),
    why ? h("p", { class: "attention", role: "alert" }, why) : null,
    h(
      "form",
      {
        id: "signin",
        onsubmit: (e) => {
          e.preventDefault();
          sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
          route();
        },
      },
      h("label", { for: "token" }, "API token"),
      h("input", { id: "token", type: "password", autocomplete: "current-password", required: true }),
      " ",
      h("button", { class: "primary", type: "submit" }, "Sign in"),
    ),
  );
  document.getElementById("token").focus();
}

// -- topology ---------------------------------------------------------------------------------
// Rates come from the API (rate, rate_in, rate_out: per second over about the last 10 s).
const perSecond = (rate) => (rate === null || rate === undefined ? "–" : `${rate < 10 ? rate.toFixed(1) : Math.round(rate)}/s`);

async function refreshLetters(force) {
  if (!force && lettersByName && Date.now() - lettersAt < LETTERS_POLL_MS) return;
  lettersAt = Date.now();
  try {
    const page = await api("/dead-letters?limit=1"); // the counts per subscriber are what is wanted here
    lettersByName = page.counts || {};
  } catch (e) {
    if (e.status === 401) throw e;
  }
}

function graph(topology) {
  const col = [20, 330, 640];
  const width = 300, nodeH = 46, gap = 14, pad = 20;
  const rows = Math.max(topology.inbound.length, topology.routes.length, topology.subscribers.length, 1);
  const height = pad * 2 + rows * (nodeH + gap);
  const y = (i) => pad + i * (nodeH + gap);
  const svg = s("svg", {
    width: col[2] + width + 20, height, role: "img", "aria-labelledby": "graph-title",
    viewBox: `0 0 ${col[2] + width + 20} ${height}`,
  });
  svg.append(s("title", { id: "graph-title" }, "Topology: inbound adapters, routes and subscribers, with their states"));
  const edges = s("g", {});
  svg.append(edges);
  const at = { inbound: {}, route: {}, subscriber: {} };
  topology.inbound.forEach((n, i) => (at.inbound[n.name] = y(i)));
  topology.routes.forEach((r, i) => (at.route[r.name] = y(i)));
  topology.subscribers.forEach((n, i) => (at.subscriber[n.name] = y(i)));
  const edge = (x1, y1, x2, y2) => {
    const mid = (x1 + x2) / 2;
    edges.append(s("path", { d: `M${x1},${y1 + nodeH / 2} C${mid},${y1 + nodeH / 2} ${mid},${y2 + nodeH / 2} ${x2},${y2 + nodeH / 2}` }));
  };
  for (const r of topology.routes) {
    for (const n of topology.inbound) if (n.schema === r.from) edge(col[0] + width, at.inbound[n.name], col[1], at.route[r.name]);
    for (const to of r.to) if (to in at.subscriber) edge(col[1] + width, at.route[r.name], col[2], at.subscriber[to]);
  }
  const node = (x, yy, kind, title, line, href, label) => {
    const g = s("g", { class: `node n-${kind}` },
      s("rect", { x, y: yy, width, height: nodeH }),
      s("text", { x: x + 10, y: yy + 18 }, title),
      s("text", { x: x + 10, y: yy + 36, class: "sub" }, line));
    if (!href) return g;
    const a = s("a", { href, "aria-label": label }, g);
    return a;
  };
  const inboundNode = (n, i) => {
    const kind = n.attention && n.state === "running" ? "warn" : stateClass(n.state);
    const state = n.attention && n.state === "running" ? "running · needs attention" : n.state;
    const el = node(col[0], y(i), kind, `${n.name} (${n.type})`, `${state} · ${n.schema || ""} · ${perSecond(n.rate)}`,
      `#/inbound/${encodeURIComponent(n.name)}`, `Inbound ${n.name}: ${state}`);
    el.setAttribute("data-inbound", n.name);
    el.setAttribute("data-attention", !["running", "standby"].includes(n.state) || n.attention ? "yes" : "no");
    el.setAttribute("data-state", n.state);
    if (n.attention || n.detail) el.append(s("title", {}, n.attention || n.detail));
    return el;
  };
  topology.inbound.forEach((n, i) =>
    svg.append(inboundNode(n, i)));
  topology.routes.forEach((r, i) => {
    svg.append(node(col[1], y(i), "route", r.name, `in ${perSecond(r.rate_in)} · out ${perSecond(r.rate_out)} · failed ${r.failed}`, null));
  });
  topology.subscribers.forEach((n, i) => {
    const letters = (lettersByName && lettersByName[n.name]) || 0;
    const kind = letters > 0 && n.state === "healthy" ? "bad" : stateClass(n.state);
    const state = n.state.replaceAll("_", " ") + (letters ? ` · ${letters} dead letter(s)` : "");
    const line = `${state} · in ${perSecond(n.rate_in)} · out ${perSecond(n.rate_out)}`;
    const el = node(col[2], y(i), kind, `${n.name} (${n.type})`, line, `#/subscriber/${encodeURIComponent(n.name)}`,
      `Subscriber ${n.name}: ${state}`);
    el.setAttribute("data-subscriber", n.name);
    el.setAttribute("data-state", n.state);
    el.setAttribute("data-attention", needsAttention(n) ? "yes" : "no");
    svg.append(el);
  });
  return h("div", { class: "graph" }, svg);
}

async function showTopology() {
  const gen = generation;
  const draw = async () => {
    const topology = await api("/topology");
    await refreshLetters(false);
    if (gen !== generation) return;
    const trouble = topology.subscribers.filter(needsAttention);
    // standby: another hub process reads that source now (its lease); nothing to act on here.
    const badInbound = topology.inbound.filter((n) => !["running", "standby"].includes(n.state) || n.attention);
    document.getElementById("who").textContent = `role: ${topology.role}`;
    show(
      h("h2", {}, "Topology"),
      trouble.length || badInbound.length
        ? h("div", { class: "attention", id: "attention" },
            h("strong", {}, `${trouble.length + badInbound.length} part(s) need attention`),
            h("ul", {},
              badInbound.map((n) => h("li", {}, "inbound ",
                h("a", { href: `#/inbound/${encodeURIComponent(n.name)}` }, n.name), ": ",
                n.state === "running" ? n.attention : [badge(n.state), " ", n.detail || ""])),
              trouble.map((n) => h("li", {},
                h("a", { href: `#/subscriber/${encodeURIComponent(n.name)}` }, n.name), ": ", badge(n.state), " ",
                lettersByName && lettersByName[n.name] ? `${lettersByName[n.name]} open dead letter(s) ` : "",
                n.state === "paused" ? `by ${pausedText(n)}` : n.last_error || ""))))
        : h("p", { id: "attention" }, badge("healthy", "all parts healthy")),
      h("div", { class: "legend", "aria-hidden": "true" },
        badge("healthy"), badge("retrying"), badge("circuit_open", "circuit open / dead letters"), badge("paused", "paused / standby")),
      graph(topology),
      h("p", {}, `${topology.inbound.length} inbound, ${topology.routes.length} routes, ${topology.subscribers.length} subscribers. `,
        "Rates are per second over about the last 10 s; the page refreshes every 2 s."),
    );
  };
  await draw();
  if (gen !== generation) return;
  window.busConsoleRedraw = draw; // one refresh on demand: the tests time it
  every(POLL_MS, () => draw().catch(failed));
}

// -- one inbound adapter -----------------------------------------------------------------------
// Where a poller reads from (GET /positions), in words, by its state.
const POSITION_TEXT = {
  current: "Saved for what the config reads now: reading goes on from it.",
  none: "No position saved: the source is read from its start.",
  "another-source": "Saved while it read something else: NOT used. When resumed, the source is read from its start, "
    + "unless the position is kept for what the config reads now (a filter changed on purpose).",
  "renamed-from": "None under this name: a former name's is taken when it starts (a rename).",
};
const brief = (value) => (value === null || value === undefined ? "–" : JSON.stringify(value));

async function showInbound(name) {
  const gen = generation;
  const reason = { text: "" };
  let position = null; // this inbound's row of GET /positions, read at open, every 10 s and after each change
  let positionRead = 0;
  let confirming = null; // "reset" or "adopt", while asked to confirm
  const readPosition = async () => {
    position = (await api("/positions")).find((x) => x.name === name) || null;
    positionRead = Date.now();
  };
  const changePosition = async (action) => {
    confirming = null;
    const done = await api(`/inbound/${encodeURIComponent(name)}/position/${action}`, { method: "POST" });
    say(`${name}: ${done.said}`);
    await readPosition();
    await draw();
  };
  const positionSection = (n) => {
    if (!position) return null;
    const paused = n.state === "paused";
    const movable = position.kept_in === "kafka";
    const ask = (action) => async () => { confirming = action; await draw(); document.getElementById("confirm-yes")?.focus(); };
    const question = confirming === "reset"
      ? "Forget the position? When resumed, the source is read again from its start (its records come again)."
      : `Keep the position for what the config reads now? Records the changed ${position.differs.join(", ")} lets in that sit `
        + "before it are not read.";
    return [
      h("h3", {}, "Position"),
      h("table", {},
        h("tbody", {},
          h("tr", {}, h("th", { scope: "row" }, "State"), h("td", { id: "position-state" }, position.state.replaceAll("-", " "))),
          h("tr", {}, h("th", { scope: "row" }, "Position"), h("td", { id: "position" }, brief(position.position))),
          h("tr", {}, h("th", { scope: "row" }, "Reads"), h("td", {}, brief(position.reads))),
          position.state === "another-source"
            ? h("tr", {}, h("th", { scope: "row" }, "Saved in"),
                h("td", { id: "position-saved-in" }, `${brief(position.saved_in)} (${position.differs.join(", ")} changed)`))
            : null)),
      h("p", { id: "position-text" }, movable ? POSITION_TEXT[position.state]
        : "The source keeps its place itself (a durable consumer, a consumer group, a replication slot): "
          + "the position saved here is a fallback, shown, not changed."),
      confirming
        ? h("div", { class: "confirm", role: "alertdialog", "aria-label": "Confirm" }, question, " ",
            h("button", { id: "confirm-yes", class: "primary", type: "button", onclick: () => changePosition(confirming) },
              confirming === "reset" ? "Yes, read from the start" : "Yes, keep it"),
            " ",
            h("button", { type: "button", onclick: async () => { confirming = null; await draw(); } }, "Cancel"))
        : movable && position.state !== "none" && position.state !== "renamed-from"
          ? h("div", { class: "actions" },
              position.state === "another-source"
                ? h("button", { id: "adopt", type: "button", disabled: !paused, onclick: ask("adopt") }, "Keep this position…")
                : null,
              h("button", { id: "reset", class: "danger", type: "button", disabled: !paused, onclick: ask("reset") },
                "Read again from the start…"),
              paused ? null : h("span", {}, " Pause reading first: a reader would save over a change."))
          : null,
    ];
  };
  const draw = async () => {
    const topology = await api("/topology");
    if (Date.now() - positionRead > 10000) await readPosition();
    if (gen !== generation) return;
    const n = topology.inbound.find((x) => x.name === name);
    if (!n) {
      show(h("p", {}, h("a", { href: "#/" }, "← Topology")), h("p", { class: "error" }, `No inbound adapter named ${name} here.`));
      return;
    }
    const progress = Object.entries(n.progress || {});
    show(
      h("p", {}, h("a", { href: "#/" }, "← Topology")),
      h("h2", {}, `Inbound ${n.name} `, badge(n.state)),
      h("table", {},
        h("tbody", {},
          h("tr", {}, h("th", { scope: "row" }, "Type"), h("td", {}, n.type)),
          h("tr", {}, h("th", { scope: "row" }, "Schema"), h("td", {}, n.schema || "–")),
          h("tr", {}, h("th", { scope: "row" }, "Topic"), h("td", {}, n.topic || "–")),
          h("tr", {}, h("th", { scope: "row" }, "Events per second"), h("td", {}, perSecond(n.rate))),
          h("tr", {}, h("th", { scope: "row" }, "Paused by"), h("td", { id: "paused-by" }, pausedText(n))),
          h("tr", {}, h("th", { scope: "row" }, "State"), h("td", { id: "inbound-detail" }, n.detail || n.state)),
          h("tr", {}, h("th", { scope: "row" }, "Needs"), h("td", {}, n.attention || "–")),
          progress.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k.replaceAll("_", " ")), h("td", {}, String(v)))))),
      h("div", { class: "actions" },
        n.state === "paused"
          ? h("button", { id: "resume", type: "button", onclick: () => steer("resume") }, "Resume reading")
          : [reasonField(reason), h("button", { id: "pause", type: "button", onclick: () => steer("pause") }, "Pause reading")]),
      h("p", {}, "A pause stops reading the source in every hub process within seconds: records, changes and messages wait at ",
        "the source, a webhook answers 503 so its sender retries later. A resume reads on from where it stopped."),
      positionSection(n),
    );
  };
  const steer = async (action) => {
    const body = action === "pause" && reason.text.trim() ? { reason: reason.text.trim() } : undefined;
    const done = await api(`/inbound/${encodeURIComponent(name)}/${action}`, { method: "POST", body });
    reason.text = "";
    confirming = null;
    say(`${done.paused ? "Paused" : "Resumed"} ${name}: every inbound process obeys within seconds.`);
    await readPosition();
    await draw();
  };
  await draw();
  if (gen !== generation) return;
  every(POLL_MS, () => { if (!typing()) draw().catch(failed); });
}

// -- one subscriber ----------------------------------------------------------------------------
async function showSubscriber(name) {
  const gen = generation;
  const reason = { text: "" };
  let confirming = null; // {action, where, matched}
  let leftOut = []; // letters the last replay left out: a later event of their key came after them
  // Per window action (WINDOW_ACTIONS): the window typed, and its dry run while it is confirmed.
  const windows = {
    redeliver: { since: "", until: "", keys: "", superseded: false, dry: null },
    backfill: { since: "", until: "", keys: "", superseded: false, dry: null },
  };
  const draw = async () => {
    const sub = await api(`/subscribers/${encodeURIComponent(name)}`);
    const page = await api(`/dead-letters?subscriber=${encodeURIComponent(name)}&limit=200`);
    if (gen !== generation) return;
    const ledger = sub.ledger || {};
    const ask = async (action, where) => {
      const done = await api(`/dead-letters/${action}`, { method: "POST", body: { subscriber: name, ...where, dry_run: true } });
      confirming = { action, where, matched: done.matched };
      await draw();
      document.getElementById("confirm-yes")?.focus();
    };
    const confirmBox = confirming
      ? h("div", { class: "confirm", role: "alertdialog", "aria-label": "Confirm" },
          `${confirming.matched} dead letter(s) would be ${confirming.action === "replay" ? "replayed" : "purged"}. `,
          h("button", {
            id: "confirm-yes", class: "primary", type: "button",
            onclick: async () => {
              const { action, where } = confirming;
              confirming = null;
              const done = await api(`/dead-letters/${action}`, { method: "POST", body: { subscriber: name, ...where } });
              leftOut = done.superseded || [];
              const named = leftOut.slice(0, 5).map((x) => `${x.event_id} (after it: ${x.after})`).join("; ");
              say(`${action === "replay" ? "Replayed" : "Purged"} ${done.done} dead letter(s).` + (leftOut.length
                ? ` ${leftOut.length} not replayed: a later event of the same key came after each, and replayed now it would `
                  + `put older data over newer (${named}${leftOut.length > 5 ? " …" : ""}). Purge them, or replay them anyway.`
                : "") + ((done.unsendable || []).length
                ? ` ${done.unsendable.length} cannot be replayed: `
                  + done.unsendable.slice(0, 5).map((x) => `${x.event_id || x.position}: ${x.reason}`).join("; ")
                : ""));
              await refreshLetters(true);
              await draw();
            },
          }, `Yes, ${confirming.action}`),
          " ",
          h("button", { type: "button", onclick: async () => { confirming = null; await draw(); } }, "Cancel"))
      : null;
    show(
      h("p", {}, h("a", { href: "#/" }, "← Topology")),
      h("h2", {}, `Subscriber ${sub.name} `, badge(sub.state),
        page.total ? [" ", badge("dead_lettered", `${page.total} open dead letter(s)`)] : null),
      h("div", { class: "cards" },
        h("div", { class: "card" }, "Entered", h("b", {}, ledger.entered ?? "–")),
        h("div", { class: "card" }, "Delivered", h("b", {}, ledger.delivered ?? "–")),
        h("div", { class: "card" }, "Dead-lettered", h("b", {}, ledger.dead_lettered ?? "–")),
        h("div", { class: "card" }, "In flight", h("b", {}, ledger.in_flight ?? "–")),
        h("div", { class: "card" }, "Failing events", h("b", {}, sub.failing_events)),
        h("div", { class: "card" }, "Held keys", h("b", {}, sub.held_keys))),
      h("table", {},
        h("tbody", {},
          h("tr", {}, h("th", { scope: "row" }, "Type"), h("td", {}, sub.type)),
          h("tr", {}, h("th", { scope: "row" }, "Routes"), h("td", {}, sub.routes.join(", ") || "none")),
          h("tr", {}, h("th", { scope: "row" }, "Since"), h("td", {}, sub.since || "–")),
          h("tr", {}, h("th", { scope: "row" }, "Paused by"), h("td", { id: "paused-by" }, pausedText(sub))),
          h("tr", {}, h("th", { scope: "row" }, "Last error"), h("td", { id: "last-error" }, sub.last_error || "–")),
          sub.copying ? h("tr", {}, h("th", { scope: "row" }, "Under way"), h("td", { id: "copying" }, sub.copying)) : null)),
      h("div", { class: "actions" },
        sub.state === "paused"
          ? h("button", { id: "resume", type: "button", onclick: () => steer("resume") }, "Resume deliveries")
          : [reasonField(reason), h("button", { id: "pause", type: "button", onclick: () => steer("pause") }, "Pause deliveries")]),
      windowSection("redeliver"),
      windowSection("backfill"),
      h("h3", {}, `Open dead letters (${page.total})`),
      h("div", { class: "actions" },
        h("button", { id: "replay-all", type: "button", disabled: page.total === 0, onclick: () => ask("replay", { all: true }) },
          "Replay all…"),
        h("button", { id: "purge-all", class: "danger", type: "button", disabled: page.total === 0, onclick: () => ask("purge", { all: true }) },
          "Purge all…"),
        leftOut.length
          ? h("button", {
              id: "replay-left-out", type: "button",
              onclick: () => {
                const ids = leftOut.map((x) => x.event_id);
                leftOut = [];
                return ask("replay", { ids, include_superseded: true });
              },
            }, `Replay the ${leftOut.length} left out anyway…`)
          : null),
      confirmBox,
      page.total === 0
        ? h("p", { id: "no-letters" }, "None.")
        : h("table", { id: "letters" },
            h("thead", {}, h("tr", {}, ["Event", "Failed at", "Class", "Attempts", "Error", ""].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, page.items.map((x) => h("tr", {},
              h("td", {}, h("a", { href: `#/event/${encodeURIComponent(x.event_id)}` }, x.event_id)),
              h("td", {}, x.failed_at), h("td", {}, x.error_class), h("td", {}, x.attempts), h("td", {}, x.error),
              h("td", {}, h("button", { type: "button", "aria-label": `Replay ${x.event_id}`, onclick: () => ask("replay", { ids: [x.event_id] }) },
                "Replay…")))))),
    );
  };
  const steer = async (action) => {
    const body = action === "pause" && reason.text.trim() ? { reason: reason.text.trim() } : undefined;
    const done = await api(`/subscribers/${encodeURIComponent(name)}/${action}`, { method: "POST", body });
    reason.text = "";
    say(`${done.paused ? "Paused" : "Resumed"} ${name}: every replica obeys within seconds.`);
    await draw();
  };
  // A window of time and its action's button; the dry run's counts to confirm, once asked.
  const windowSection = (kind) => {
    const words = WINDOW_ACTIONS[kind];
    const typed = windows[kind];
    const field = (label, part, attrs) => h("label", {}, label, h("input", { id: `${kind}-${part}`, ...attrs, value: typed[part],
      oninput: (e) => { typed[part] = e.target.value; } }));
    return [
      h("h3", {}, words.title),
      h("p", {}, words.about),
      h("div", { class: "actions" },
        field("Since ", "since", { type: "datetime-local", step: 1 }),
        field("Until (optional) ", "until", { type: "datetime-local", step: 1 }),
        field("Only keys (optional) ", "keys", { type: "text", placeholder: "e.g. cus_123, cus_456" }),
        h("label", {}, h("input", { id: `${kind}-superseded`, type: "checkbox", checked: typed.superseded,
          onchange: (e) => { typed.superseded = e.target.checked; } }), " Also events a newer event of their key came after (older data over newer)"),
        h("button", { id: kind, type: "button", onclick: () => onWindow(kind, true) }, words.button)),
      typed.dry
        ? h("div", { class: "confirm", role: "alertdialog", "aria-label": words.confirm },
            words.would(typed.dry),
            words.left(typed.dry) ? ` (left out: ${words.left(typed.dry)})` : "",
            typed.dry.paused ? ". The subscriber is paused: they wait until it is resumed. " : ". ",
            h("button", { id: `${kind}-yes`, class: "primary", type: "button", disabled: typed.dry.to_send === 0,
              onclick: () => onWindow(kind, false) }, words.yes),
            " ",
            h("button", { type: "button", onclick: async () => { typed.dry = null; await draw(); } }, "Cancel"))
        : null,
    ];
  };
  // A dry run first (its counts confirmed), then the action itself.
  const onWindow = async (kind, dry) => {
    const words = WINDOW_ACTIONS[kind];
    const typed = windows[kind];
    if (!typed.since) {
      say(words.missing, true);
      return;
    }
    const body = { since: utc(typed.since), dry_run: dry };
    if (typed.superseded) body.include_superseded = true; // a target that keeps every event, not only each key's latest
    if (typed.until) body.until = utc(typed.until);
    const keys = typed.keys.split(",").map((k) => k.trim()).filter((k) => k);
    if (keys.length) body.keys = keys;
    typed.dry = null;
    say(dry ? words.reading : words.doing);
    const done = await api(`/subscribers/${encodeURIComponent(name)}/${kind}`, { method: "POST", body });
    if (dry) {
      typed.dry = done;
      say("");
    } else {
      const left = words.left(done);
      say(words.did(done, name) + (left ? ` Left out: ${left}.` : "")
        + (done.oldest_kept ? ` Kafka no longer holds what came before ${done.oldest_kept}.` : ""));
    }
    await draw();
    document.getElementById(`${kind}-yes`)?.focus();
  };
  await draw();
  if (gen !== generation) return;
  every(POLL_MS * 2, () => { if (!main.querySelector(".confirm") && !typing()) draw().catch(failed); });
}

// -- events ------------------------------------------------------------------------------------
function showSearch(query) {
  const results = h("div", { id: "results" });
  const gen = generation;
  const search = async (value) => {
    const found = await api(`/events?q=${encodeURIComponent(value)}`);
    if (gen !== generation) return;
    if (found.ids.length === 1 && found.ids[0] === value) {
      location.hash = `#/event/${encodeURIComponent(value)}`;
      return;
    }
    results.replaceChildren(
      ...[!found.lineage_enabled ? h("p", { class: "attention" }, "Lineage is off on this hub (lineage.enabled): only dead letters are searched.") : null,
      found.ids.length === 0
        ? h("p", {}, `No event has the id, key or subject “${value}”.`)
        : h("div", {}, h("p", {}, `${found.ids.length} event(s):`),
            h("ul", {}, found.ids.map((id) => h("li", {}, h("a", { href: `#/event/${encodeURIComponent(id)}` }, id))))),
      ].filter((c) => c !== null),
    );
  };
  show(
    h("h2", {}, "Event search"),
    h("form", {
      role: "search",
      onsubmit: (e) => {
        e.preventDefault();
        const value = document.getElementById("q").value.trim();
        if (value) search(value).catch(failed);
      },
    },
      h("label", { for: "q" }, "Event id, key or subject"),
      h("input", { id: "q", type: "text", value: query || "", required: true }),
      " ",
      h("button", { class: "primary", type: "submit" }, "Find")),
    results,
  );
  document.getElementById("q").focus();
  if (query) search(query).catch(failed);
}

async function showEvent(id) {
  const gen = generation;
  const e = await api(`/events/${encodeURIComponent(id)}`);
  if (gen !== generation) return;
  const entered = e.entered;
  show(
    h("p", {}, h("a", { href: "#/events" }, "← Event search")),
    h("h2", {}, `Event ${e.id}`),
    h("h3", {}, "Where it is now"),
    h("ul", { id: "now" }, e.now.map((w) => h("li", { "data-subscriber": w.subscriber, "data-state": w.state },
      h("strong", {}, w.subscriber), " ", badge(w.state), " ", w.detail))),
    h("h3", {}, "Entered"),
    entered
      ? h("table", { id: "entered" }, h("tbody", {},
          [["Source", entered.source], ["Type", entered.type], ["Event time", entered.time], ["Key", entered.key ?? "–"],
           ["Subject", entered.subject ?? "–"], ["Routed at", entered.at], ["Canonical position", entered.position]]
            .map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v)))))
      : h("p", {}, "The router has not read it (refused at the edge, or not routed yet)."),
    entered && entered.data ? h("details", {}, h("summary", {}, "Canonical event data"), h("pre", {}, JSON.stringify(entered.data, null, 2))) : null,
    h("h3", {}, "Routes"),
    e.routed.length
      ? h("table", { id: "routed" },
          h("thead", {}, h("tr", {}, ["Route", "Sent to", "Element"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, e.routed.map((c) => h("tr", {}, h("td", {}, c.route), h("td", {}, c.to), h("td", {}, c.element ?? "–")))))
      : h("p", {}, "No route sent a copy."),
    h("h3", {}, "Deliveries"),
    e.deliveries.length
      ? h("table", { id: "deliveries" },
          h("thead", {}, h("tr", {}, ["Subscriber", "Settled at", "Outcome", "Attempts", "Failed attempts", "Replayed from"]
            .map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, e.deliveries.map((d) => h("tr", { "data-subscriber": d.subscriber, "data-outcome": d.outcome },
            h("td", {}, d.subscriber), h("td", {}, d.at), h("td", {}, badge(d.outcome)), h("td", {}, d.attempts),
            h("td", {}, d.failures.length ? h("ul", {}, d.failures.map((f) => h("li", {}, `${f.at}: ${f.answer}`))) : "–"),
            h("td", {}, d.replayed_from ?? "–")))))
      : h("p", {}, "Not settled by any subscriber yet."),
    h("h3", {}, "Dead letters"),
    e.dead_letters.length
      ? h("table", { id: "dead-letters" },
          h("thead", {}, h("tr", {}, ["Subscriber", "Failed at", "Error", "Status"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, e.dead_letters.map((x) => h("tr", {},
            h("td", {}, h("a", { href: `#/subscriber/${encodeURIComponent(x.subscriber)}` }, x.subscriber)),
            h("td", {}, x.failed_at), h("td", {}, x.error), h("td", {}, badge(x.status === "new" ? "dead_lettered" : x.status, x.status))))))
      : h("p", {}, "None."),
  );
}

async function showConfig() {
  const gen = generation;
  const config = await api("/config");
  if (gen !== generation) return;
  show(
    h("h2", {}, "Running config"),
    h("p", {}, "As this hub runs it. Secrets (and every value read from the environment or a file) are masked."),
    h("pre", { id: "config" }, JSON.stringify(config, null, 2)),
  );
}

// -- migrations (bus migrate) ------------------------------------------------------------------
const RUN_STATE = { finished: "healthy", running: "retrying", verifying: "retrying", rolling_back: "retrying",
  interrupted: "circuit_open", rolled_back: "paused", abandoned: "paused" };

// The report needs the token too: fetched, then shown from a blob in a new tab.
async function openReport(path) {
  const answer = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  if (!answer.ok) throw new Refused(answer.status, (await answer.json().catch(() => ({}))).detail || answer.statusText);
  const page = URL.createObjectURL(new Blob([await answer.text()], { type: "text/html" }));
  window.open(page, "_blank", "noopener");
}

async function showMigrations() {
  const gen = generation;
  const draw = async () => {
    const found = await api("/migrations");
    if (gen !== generation) return;
    const count = (r, name) => (r.counts[name] || 0).toLocaleString("en");
    show(
      h("h2", {}, "Migrations"),
      h("p", {}, `Runs of bus migrate in ${found.state_folder}, oldest first; the page refreshes every 2 s.`),
      found.runs.length
        ? h("table", { id: "migrations" },
            h("thead", {}, h("tr", {}, ["Run", "Migration", "State", "Started", "Ran by", "Rows read", "Written", "Unchanged",
              "Refused", "Failed", "Report"].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, found.runs.map((r) => h("tr", {},
              h("td", {}, h("code", {}, r.id)), h("td", {}, r.migration),
              h("td", {}, h("span", { class: `badge s-${stateClass(RUN_STATE[r.status] || "retrying")}` }, r.status.replaceAll("_", " "))),
              h("td", {}, r.started), h("td", {}, r.ran_by), h("td", {}, r.rows_read.toLocaleString("en")),
              h("td", {}, count(r, "written")), h("td", {}, count(r, "unchanged")), h("td", {}, count(r, "refused")),
              h("td", {}, count(r, "failed")),
              h("td", {}, r.report
                ? h("button", { type: "button", onclick: () => openReport(r.report).catch(failed) }, "Open report")
                : "–")))))
        : h("p", { id: "migrations" }, "No migration has run with this state folder."),
    );
  };
  await draw();
  if (gen !== generation) return;
  window.busConsoleRedraw = draw;
  every(POLL_MS, () => draw().catch(failed));
}

// -- routing -----------------------------------------------------------------------------------
function failed(e) {
  if (e instanceof Refused && e.status === 401) return;
  say(e instanceof Refused ? `The hub refused: ${e.message}` : `Could not reach the hub: ${e.message}`, true);
}

async function route() {
  generation += 1;
  clearTimers();
  say("");
  if (!token()) return signIn();
  document.getElementById("signout").hidden = false;
  const hash = location.hash || "#/";
  for (const a of document.querySelectorAll("nav a")) {
    const current = a.getAttribute("href") === hash
      || (a.getAttribute("href") === "#/" && (hash.startsWith("#/subscriber/") || hash.startsWith("#/inbound/")))
      || (a.getAttribute("href") === "#/events" && hash.startsWith("#/event"));
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const [, page, rest] = hash.match(/^#\/([^/?]*)\/?(.*)$/) || [];
  try {
    if (page === "subscriber") await showSubscriber(decodeURIComponent(rest));
    else if (page === "inbound") await showInbound(decodeURIComponent(rest));
    else if (page === "event") await showEvent(decodeURIComponent(rest));
    else if (page === "events") showSearch(new URLSearchParams(location.hash.split("?")[1] || "").get("q"));
    else if (page === "config") await showConfig();
    else if (page === "migrations") await showMigrations();
    else await showTopology();
  } catch (e) {
    failed(e);
  }
}

document.getElementById("signout").addEventListener("click", () => signIn("Signed out."));
window.addEventListener("hashchange", route);
route();
