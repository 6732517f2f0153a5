// Herald console: a single page over Herald's HTTP API, served by the API
// itself. No framework, no build step, nothing from the network: the browser
// talks only to the API it was served by, with the tenant's API key.
"use strict";

const KEY_STORE = "herald.apiKey";
const POLL_MS = 2000;
const PAIR_POLL_MS = 1000;
const FINAL_STATES = ["sent", "delivered", "read", "failed", "unknown", "suppressed", "cancelled"];
const MESSAGE_STATES = ["queued", "scheduled", "sending", "sent", "delivered", "read", "failed", "unknown", "suppressed", "cancelled"];
// Every event type a webhook endpoint may subscribe to (the API's list; a
// unit test keeps the two equal).
const EVENT_TYPES = [
  "message.sent", "message.delivered", "message.read", "message.failed", "message.unknown",
  "message.received", "contact.opted_out",
  "campaign.started", "campaign.paused", "campaign.resumed", "campaign.cancelled", "campaign.completed",
  "number.pairing", "number.paired", "number.pairing_failed", "number.connected", "number.disconnected",
  "number.needs_pairing", "number.banned", "number.timelocked", "number.restored", "number.throttled",
];

// ---- DOM helpers: every text goes in as text, never as markup.

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h("div", {}, h("label", { for: id }, label), input, hint ? h("div", { class: "muted" }, hint) : null);
}

function badge(text) {
  return h("span", { class: `badge ${text}` }, String(text).replace(/_/g, " "));
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

function table(headers, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", class: x.num ? "num" : null }, x.label || x)))),
    h("tbody", {}, rows));
}

// ---- Notices: errors and confirmations, announced to screen readers.

function notify(kind, text, details) {
  const box = document.getElementById("notice");
  box.className = kind;
  box.replaceChildren(h("div", {}, text));
  if (details && details.length) box.append(h("ul", {}, details.map((d) => h("li", {}, d))));
}

function clearNotice() {
  const box = document.getElementById("notice");
  box.className = "";
  box.replaceChildren();
}

// ---- The API.

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
  details() {
    const errors = (this.problem.errors || []).map((e) => `${e.pointer || "request"}: ${e.reason}`);
    if (this.problem.rejected_total > errors.length) errors.push(`… ${this.problem.rejected_total - errors.length} more`);
    return errors;
  }
}

async function api(method, path, body, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY_STORE) || ""}` };
  let payload;
  if (body instanceof Blob || typeof body === "string") {
    headers["Content-Type"] = options.contentType || "text/csv";
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  if (method === "POST") headers["Idempotency-Key"] = options.idempotencyKey || crypto.randomUUID();
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload });
  } catch (err) {
    throw new ApiError(0, { title: "Herald's API cannot be reached", detail: `Herald's API cannot be reached (${err.message}). Check that it is running.` });
  }
  if (response.status === 401) {
    signOut("Your API key was not accepted. Sign in again.");
    throw new ApiError(401, { title: "Unauthorized" });
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!response.ok) throw new ApiError(response.status, json || { title: `HTTP ${response.status}`, detail: text });
  return json;
}

// Runs an action, reporting its failure in the notice area.
async function attempt(action, success) {
  try {
    const result = await action();
    if (success) notify("info", typeof success === "function" ? success(result) : success);
    return result;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return undefined;
    notify("error", err.message, err instanceof ApiError ? err.details() : []);
    return undefined;
  }
}

async function all(path) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < 20; page++) {
    const sep = path.includes("?") ? "&" : "?";
    const got = await api("GET", `${path}${sep}limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...got.data);
    if (!got.next_cursor) break;
    cursor = got.next_cursor;
  }
  return items;
}

// ---- Views. Each renders into <main> and may return a function that stops
// its timers when the view is left.

let leaveView = null;

function render(title, ...content) {
  const main = document.getElementById("main");
  main.replaceChildren(h("h1", {}, title), ...content);
  document.title = `${title} · Herald`;
  return main;
}

function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const loop = async () => {
    if (stopped) return;
    try { await fn(); } catch (err) { if (!(err instanceof ApiError && err.status === 401)) notify("error", err.message); }
    if (!stopped) timer = setTimeout(loop, ms);
  };
  loop();
  return () => { stopped = true; clearTimeout(timer); };
}

function signInView() {
  const key = h("input", { type: "password", autocomplete: "current-password", required: true, id: "api-key" });
  const form = h("form", { class: "card signin", onsubmit: async (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORE, key.value.trim());
    try {
      await api("GET", "/v1/numbers?limit=1");
      clearNotice();
      // A new hash routes by itself (hashchange); the same one does not.
      if (location.hash !== "#/numbers") location.hash = "#/numbers";
      else route();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) notify("error", err.message);
    }
  } },
  h("h2", {}, "Sign in"),
  h("p", { class: "muted" }, "Use one of your tenant's API keys (herald-api keys create prints one). The key stays in this browser tab only."),
  field("API key", key),
  h("p", {}, h("button", { class: "primary", type: "submit" }, "Sign in")));
  render("Herald console", form);
  key.focus();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  if (leaveView) { leaveView(); leaveView = null; }
  // Not `location.hash = ""`: its hashchange would clear the notice below.
  history.replaceState(null, "", location.pathname);
  updateChrome();
  signInView();
  if (message) notify("error", message);
}

// ---- Numbers and pairing.

async function numbersView() {
  const list = h("div", {});
  const pairing = h("div", {});
  const phone = h("input", { type: "tel", required: true, placeholder: "+5511987654321", id: "number-phone" });
  const label = h("input", { type: "text", id: "number-label" });
  const kind = h("select", { id: "number-kind" }, h("option", { value: "whatsapp" }, "WhatsApp (linked device)"), h("option", { value: "sim" }, "Simulated"));
  const add = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const created = await attempt(() => api("POST", "/v1/numbers", { phone: phone.value, kind: kind.value, label: label.value || undefined }),
      (n) => `Number ${n.phone} added. Link it to WhatsApp with “Pair”.`);
    if (created) { phone.value = ""; label.value = ""; refresh(); }
  } },
  h("h2", {}, "Add a number"),
  h("div", { class: "grid2" }, field("Phone (international format)", phone), field("Label (optional)", label)),
  field("Kind", kind),
  h("p", {}, h("button", { class: "primary", type: "submit" }, "Add number")));

  let stopPairing = null;
  const startPairing = async (number, method) => {
    if (stopPairing) stopPairing();
    const started = await attempt(() => api("POST", `/v1/numbers/${number.id}/pair`, { method }));
    if (!started) return;
    clearNotice();
    stopPairing = every(PAIR_POLL_MS, async () => {
      const n = await api("GET", `/v1/numbers/${number.id}`);
      pairing.replaceChildren(pairingCard(n, method, () => { stopPairing(); stopPairing = null; pairing.replaceChildren(); }));
      if (n.connected && n.state === "active" && (!n.pairing || n.pairing.status === "paired")) {
        stopPairing(); stopPairing = null;
        notify("info", `${n.phone} is linked and connected.`);
        refresh();
      }
    });
  };

  const refresh = async () => {
    const numbers = await all("/v1/numbers");
    list.replaceChildren(table(
      ["Number", "Label", "Kind", "State", "Connection", { label: "Warm-up day", num: true }, { label: "Daily cap", num: true }, "Actions"],
      numbers.map((n) => h("tr", { "data-number": n.phone },
        h("td", {}, n.phone, n.push_name ? h("div", { class: "muted" }, n.push_name) : null),
        h("td", {}, n.label || ""),
        h("td", {}, n.kind),
        h("td", {}, badge(n.state), n.banned_until ? h("div", { class: "muted" }, `until ${when(n.banned_until)}`) : null,
          n.timelocked_until ? h("div", { class: "muted" }, `until ${when(n.timelocked_until)}`) : null),
        h("td", { class: "connection" }, h("span", { class: `dot ${n.connected ? "on" : ""}`, "aria-hidden": "true" }),
          n.connected ? "connected" : "offline", n.last_connected_at ? h("div", { class: "muted" }, `last ${when(n.last_connected_at)}`) : null),
        h("td", { class: "num" }, n.warmup_day),
        h("td", { class: "num" }, n.daily_cap),
        h("td", {}, h("div", { class: "row" },
          h("button", { type: "button", onclick: () => startPairing(n, "qr"), "aria-label": `Pair ${n.phone} by QR code` }, "Pair (QR)"),
          n.kind === "whatsapp" ? h("button", { type: "button", onclick: () => startPairing(n, "code"), "aria-label": `Pair ${n.phone} by code` }, "Pair (code)") : null,
          h("button", { type: "button", onclick: async () => {
            const next = n.state === "disabled" ? "active" : "disabled";
            await attempt(() => api("PATCH", `/v1/numbers/${n.id}`, { state: next }), `${n.phone} ${next === "disabled" ? "disabled" : "enabled"}.`);
            refresh();
          } }, n.state === "disabled" ? "Enable" : "Disable"),
          h("button", { type: "button", class: "danger", onclick: async () => {
            if (!confirm(`Unlink ${n.phone} from WhatsApp? Its session keys are wiped; it must be paired again.`)) return;
            await attempt(() => api("DELETE", `/v1/numbers/${n.id}/session`), `${n.phone} is being unlinked.`);
            refresh();
          } }, "Unlink"))))),
      "No numbers yet: add one below."));
  };
  render("Numbers", pairing, list, add);
  const stop = every(POLL_MS * 2, refresh);
  return () => { stop(); if (stopPairing) stopPairing(); };
}

function pairingCard(n, method, close) {
  const p = n.pairing;
  const body = [];
  if (n.connected && n.state === "active" && (!p || p.status === "paired")) {
    body.push(h("p", { class: "paired" }, `Linked: ${n.phone} is connected.`));
  } else if (!p || p.status === "waiting") {
    body.push(h("p", {}, "Asking WhatsApp for a code…"));
  } else if (p.status === "showing_code" && p.qr_png) {
    body.push(
      h("p", {}, "On the phone: WhatsApp → Settings → Linked devices → Link a device, then scan this code. It changes every few seconds; this picture follows it."),
      h("img", { class: "qr", src: p.qr_png, alt: `QR code to link ${n.phone}`, width: 280, height: 280 }),
      h("p", { class: "muted" }, `Code valid until ${when(p.code_expires_at)}.`));
  } else if (p.status === "showing_code" && p.code) {
    body.push(
      h("p", {}, "On the phone: WhatsApp → Linked devices → Link with phone number instead, and type:"),
      h("p", { class: "pair-code" }, p.code));
  } else if (p.status === "failed" || p.status === "expired") {
    body.push(h("p", { class: "error" }, `Pairing ${p.status}${p.error ? `: ${p.error}` : ""}. Try again.`));
  } else {
    body.push(h("p", {}, `Pairing: ${String(p.status).replace(/_/g, " ")}`));
  }
  return h("section", { class: "card", "aria-live": "polite", id: "pairing" },
    h("h2", {}, `Pairing ${n.phone} (${method === "qr" ? "QR code" : "pair code"})`),
    ...body,
    h("button", { type: "button", onclick: close }, "Close"));
}

// ---- Templates.

async function templatesView() {
  const list = h("div", {});
  const name = h("input", { type: "text", required: true, id: "template-name" });
  const body = h("textarea", { required: true, id: "template-body", placeholder: "Hi {{name}}, your order {{order}} has shipped." });
  const preview = h("div", {});
  const showPreview = async (t) => {
    const inputs = t.variables.map((v) => h("input", { type: "text", value: v, "data-var": v }));
    const out = h("div", { class: "preview", "aria-live": "polite" });
    const run = async () => {
      const variables = Object.fromEntries(inputs.map((i) => [i.dataset.var, i.value]));
      const got = await attempt(() => api("POST", `/v1/templates/${t.id}/preview`, { variables }));
      if (got) out.replaceChildren(got.text, h("div", { class: "muted" }, `${got.chars} characters`));
    };
    preview.replaceChildren(h("section", { class: "card" }, h("h2", {}, `Preview: ${t.name}`),
      ...t.variables.map((v, i) => field(`{{${v}}}`, inputs[i])),
      h("p", {}, h("button", { type: "button", onclick: run }, "Render")), out));
    run();
  };
  const refresh = async () => {
    const templates = await all("/v1/templates");
    list.replaceChildren(table(["Name", "Text", "Variables", ""], templates.map((t) => h("tr", {},
      h("td", {}, t.name), h("td", { class: "preview-cell" }, t.body), h("td", {}, t.variables.join(", ")),
      h("td", {}, h("button", { type: "button", onclick: () => showPreview(t) }, "Preview")))), "No templates yet."));
  };
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const t = await attempt(() => api("POST", "/v1/templates", { name: name.value, body: body.value }), (t) => `Template “${t.name}” saved.`);
    if (t) { name.value = ""; body.value = ""; refresh(); showPreview(t); }
  } },
  h("h2", {}, "New template"),
  field("Name", name),
  field("Text", body, "Handlebars: {{variable}}. A variable a recipient lacks is an error, never a blank."),
  h("p", {}, h("button", { class: "primary", type: "submit" }, "Save template")));
  render("Templates", list, preview, form);
  await refresh();
}

// ---- Campaigns.

function progressOf(c) {
  const settled = FINAL_STATES.reduce((sum, s) => sum + (c.counts[s] || 0), 0);
  const total = Object.values(c.counts).reduce((a, b) => a + b, 0) || c.recipients;
  const pct = total ? Math.floor((settled * 100) / total) : 0;
  return h("div", { class: "progress" },
    h("progress", { max: total || 1, value: settled, "aria-label": `${c.name}: ${settled} of ${total} messages settled` }),
    h("div", { class: "progress-label" }, `${settled} of ${total} settled (${pct}%) · ${c.counts.delivered + c.counts.read} delivered · ${c.counts.failed} failed`));
}

async function campaignsView() {
  const list = h("div", {});
  render("Campaigns", h("p", {}, h("a", { href: "#/campaigns/new", class: "button" }, "New campaign")), list);
  return every(POLL_MS, async () => {
    const campaigns = await all("/v1/campaigns");
    list.replaceChildren(table(["Campaign", "Status", "Progress", "Created"], campaigns.map((c) => h("tr", { "data-campaign": c.id },
      h("td", {}, h("a", { href: `#/campaigns/${c.id}` }, c.name)),
      h("td", {}, badge(c.status)),
      h("td", { style: "min-width: 320px" }, progressOf(c)),
      h("td", {}, when(c.created_at)))), "No campaigns yet."));
  });
}

async function newCampaignView() {
  const [templates, lists, numbers] = await Promise.all([all("/v1/templates"), all("/v1/lists"), all("/v1/numbers")]);
  const name = h("input", { type: "text", required: true, id: "campaign-name" });
  const template = h("select", { id: "campaign-template", required: true },
    h("option", { value: "" }, "Choose a template"), templates.map((t) => h("option", { value: t.id }, t.name)));
  const list = h("select", { id: "campaign-list" }, h("option", { value: "" }, "Choose a list"),
    lists.map((l) => h("option", { value: l.id }, `${l.name} (${l.size})`)));
  const csv = h("input", { type: "file", accept: ".csv,text/csv", id: "campaign-csv" });
  const region = h("input", { type: "text", id: "campaign-region", placeholder: "BR", maxlength: 2 });
  const senders = numbers.map((n) => h("input", { type: "checkbox", value: n.id, checked: n.state === "active", "data-phone": n.phone }));
  const pool = h("input", { type: "text", id: "campaign-pool" });
  const start = h("input", { type: "time", value: "09:00", id: "window-start" });
  const end = h("input", { type: "time", value: "20:00", id: "window-end" });
  const allDay = h("input", { type: "checkbox", id: "window-all-day" });
  const imported = h("div", { "aria-live": "polite", id: "import-report" });
  const result = h("div", { "aria-live": "polite" });
  let uploadedList = null;

  const audience = async () => {
    if (list.value) return list.value;
    const file = csv.files[0];
    if (!file) throw new ApiError(422, { title: "No audience", detail: "Choose a list or a CSV file (a header row with a phone column; other columns become variables)." });
    if (uploadedList && uploadedList.file === file) return uploadedList.id;
    const created = await api("POST", "/v1/lists", { name: `${name.value || "campaign"} · ${file.name}` });
    const query = region.value ? `?default_region=${encodeURIComponent(region.value)}` : "";
    let report = await api("POST", `/v1/lists/${created.id}/import${query}`, file, { contentType: "text/csv" });
    while (report.status === "running") {
      await new Promise((r) => setTimeout(r, 500));
      report = await api("GET", `/v1/imports/${report.id}`);
    }
    if (report.status === "failed") throw new ApiError(422, { detail: `The CSV import failed: ${report.error || "unknown error"}` });
    imported.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Import"),
      h("p", {}, `${report.accepted} contacts accepted, ${report.merged ?? report.duplicates ?? 0} duplicates merged, ${report.rejected} rows rejected.`),
      report.rejections && report.rejections.length ? h("ul", {}, report.rejections.slice(0, 10).map((r) => h("li", {}, `line ${r.line}: ${r.reason}`))) : null));
    uploadedList = { file, id: created.id };
    list.append(h("option", { value: created.id }, created.name));
    return created.id;
  };

  const request = async (dryRun) => {
    const listId = await audience();
    const chosen = senders.filter((s) => s.checked).map((s) => s.value);
    const body = {
      name: name.value, template_id: template.value || undefined, list_id: listId,
      window: allDay.checked ? { start: "00:00", end: "24:00" } : { start: start.value, end: end.value },
      dry_run: dryRun,
    };
    if (pool.value) body.pool = pool.value; else body.numbers = chosen;
    if (region.value) body.default_region = region.value;
    return { body, listId };
  };

  const previewAndPlan = async () => {
    const { body, listId } = await request(true);
    const first = await api("GET", `/v1/contacts?list_id=${listId}&limit=1`);
    const shown = [];
    if (first.data.length && template.value) {
      const p = await api("POST", `/v1/templates/${template.value}/preview`, { contact_id: first.data[0].id });
      shown.push(h("h3", {}, `What ${first.data[0].phone} receives`), h("div", { class: "preview", id: "campaign-preview" }, p.text));
    }
    const dry = await api("POST", "/v1/campaigns", body);
    const plan = dry.plan;
    shown.push(h("h3", {}, "Plan"),
      h("dl", { class: "facts", id: "campaign-plan" },
        h("dt", {}, "Recipients"), h("dd", {}, `${dry.report.accepted} (${dry.report.suppressed} suppressed, ${dry.report.rejected_total} rejected)`),
        h("dt", {}, "Completes"), h("dd", {}, plan.completes_at ? when(plan.completes_at) : "not within the plan's horizon"),
        h("dt", {}, "Unplaced"), h("dd", {}, plan.unplaced),
        h("dt", {}, "Per day"), h("dd", {}, (plan.days || []).slice(0, 7).map((d) => `${d.date}: ${d.messages}`).join(" · ") || "—")),
      dry.report.rejected && dry.report.rejected.length
        ? h("ul", {}, dry.report.rejected.slice(0, 10).map((r) => h("li", {}, `row ${r.row} ${r.phone}: ${r.reason}`))) : null);
    result.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Preview and plan"), ...shown));
  };

  const create = async () => {
    const { body } = await request(false);
    // The campaign's fields, with its creation report beside them.
    const created = await api("POST", "/v1/campaigns", body);
    await api("POST", `/v1/campaigns/${created.id}/start`);
    location.hash = `#/campaigns/${created.id}`;
    return created;
  };

  const form = h("form", { class: "card", onsubmit: (e) => { e.preventDefault(); attempt(create, (c) => `Campaign “${c.name}” started.`); } },
    field("Name", name),
    field("Template", template, templates.length ? null : h("span", {}, "No templates yet: ", h("a", { href: "#/templates" }, "create one"), ".")),
    h("fieldset", {}, h("legend", {}, "Audience"),
      field("A saved list", list),
      field("…or a CSV file (header row; a phone column, the others become variables)", csv),
      field("Default country for numbers without +country code (ISO code, optional)", region)),
    h("fieldset", {}, h("legend", {}, "Senders"),
      numbers.length ? h("div", {}, numbers.map((n, i) => h("label", { class: "inline" }, senders[i], `${n.phone} `, badge(n.state))))
        : h("p", {}, "No numbers yet: ", h("a", { href: "#/numbers" }, "add one"), "."),
      field("…or a pool tag (numbers tagged with it)", pool)),
    h("fieldset", {}, h("legend", {}, "Hours, in each recipient's local time"),
      h("div", { class: "row" }, field("From", start), field("Until", end)),
      h("label", { class: "inline" }, allDay, "Any hour of the day")),
    h("div", { class: "row" },
      h("button", { type: "button", id: "campaign-preview-button", onclick: () => attempt(async () => { clearNotice(); await previewAndPlan(); }) }, "Preview and plan"),
      h("button", { type: "submit", class: "primary", id: "campaign-start-button" }, "Create and start")));
  render("New campaign", form, imported, result);
}

async function campaignView(id) {
  const head = h("div", {});
  const counts = h("div", {});
  const messages = h("div", {});
  const stateFilter = h("select", { id: "message-state", onchange: () => loadMessages() }, h("option", { value: "" }, "Any state"), MESSAGE_STATES.map((s) => h("option", { value: s }, s)));
  const loadMessages = async () => {
    const q = stateFilter.value ? `&state=${stateFilter.value}` : "";
    const page = await api("GET", `/v1/campaigns/${id}/messages?limit=50${q}`);
    messages.replaceChildren(messagesTable(page.data));
  };
  const act = (verb) => attempt(async () => { await api("POST", `/v1/campaigns/${id}/${verb}`); await tick(); }, `Campaign ${verb === "cancel" ? "cancelled" : `${verb}d`}.`);
  const tick = async () => {
    const c = await api("GET", `/v1/campaigns/${id}`);
    document.querySelector("main h1").textContent = c.name;
    head.replaceChildren(
      h("div", { class: "row" }, badge(c.status), c.status_reason ? h("span", { class: "muted" }, c.status_reason) : null),
      progressOf(c),
      h("div", { class: "row", style: "margin-top: 10px" },
        h("button", { type: "button", onclick: () => act("pause"), disabled: !["running", "scheduled"].includes(c.status) }, "Pause"),
        h("button", { type: "button", onclick: () => act("resume"), disabled: c.status !== "paused" }, "Resume"),
        h("button", { type: "button", class: "danger", disabled: ["cancelled", "completed"].includes(c.status),
          onclick: () => { if (confirm("Cancel this campaign? Messages not yet sent are dropped.")) act("cancel"); } }, "Cancel")));
    counts.replaceChildren(h("dl", { class: "facts", id: "campaign-counts" },
      MESSAGE_STATES.map((s) => [h("dt", {}, s), h("dd", { "data-state": s }, c.counts[s] || 0)]),
      h("dt", {}, "replies"), h("dd", {}, `${c.replies} from ${c.repliers} recipients`),
      h("dt", {}, "opt-outs"), h("dd", {}, c.opt_outs),
      h("dt", {}, "started"), h("dd", {}, when(c.started_at)),
      h("dt", {}, "completed"), h("dd", {}, when(c.completed_at))));
  };
  render("Campaign", head, h("h2", {}, "Messages by state"), counts,
    h("h2", {}, "Messages"), h("div", { class: "row" }, field("Show", stateFilter)), messages);
  const stop = every(POLL_MS, async () => { await tick(); await loadMessages(); });
  return stop;
}

function messagesTable(rows) {
  return table(["Recipient", "State", "Text", "Sent", "Why it failed"], rows.map((m) => h("tr", {},
    h("td", {}, m.recipient), h("td", {}, badge(m.state)),
    h("td", { title: m.body }, m.body.length > 60 ? `${m.body.slice(0, 60)}…` : m.body),
    h("td", {}, when(m.times.sent_at)), h("td", {}, m.failure_reason || ""))), "No messages match.");
}

// ---- Message log.

async function messagesView() {
  const recipient = h("input", { type: "search", id: "search-recipient", placeholder: "+5511987654321" });
  const state = h("select", { id: "search-state" }, h("option", { value: "" }, "Any state"), MESSAGE_STATES.map((s) => h("option", { value: s }, s)));
  const out = h("div", {});
  let cursor = null;
  let rows = [];
  const more = h("button", { type: "button", hidden: true, onclick: () => search(false) }, "More");
  const search = async (fresh) => {
    if (fresh) { cursor = null; rows = []; }
    const q = new URLSearchParams({ limit: "50" });
    if (recipient.value) q.set("recipient", recipient.value);
    if (state.value) q.set("state", state.value);
    if (cursor) q.set("cursor", cursor);
    const page = await attempt(() => api("GET", `/v1/messages?${q}`));
    if (!page) return;
    rows.push(...page.data);
    cursor = page.next_cursor;
    more.hidden = !cursor;
    out.replaceChildren(messagesTable(rows));
  };
  const form = h("form", { class: "card", role: "search", onsubmit: (e) => { e.preventDefault(); clearNotice(); search(true); } },
    h("div", { class: "grid2" }, field("Recipient", recipient), field("State", state)),
    h("p", {}, h("button", { class: "primary", type: "submit" }, "Search")));
  render("Messages", form, out, more);
  await search(true);
}

// ---- Webhooks.

async function webhooksView() {
  const list = h("div", {});
  const deliveries = h("div", {});
  const url = h("input", { type: "url", required: true, id: "webhook-url", placeholder: "https://example.com/hooks/herald" });
  const description = h("input", { type: "text", id: "webhook-description" });
  const types = EVENT_TYPES.map((t) => h("input", { type: "checkbox", value: t }));
  const showDeliveries = async (w) => {
    const page = await attempt(() => api("GET", `/v1/webhooks/${w.id}/deliveries?limit=50`));
    if (!page) return;
    deliveries.replaceChildren(h("section", { class: "card" }, h("h2", {}, `Deliveries to ${w.url}`),
      h("p", {}, h("button", { type: "button", onclick: async () => {
        await attempt(() => api("POST", `/v1/webhooks/${w.id}/replay`, {}), (r) => `${r.replayed} failed deliveries queued again.`);
        showDeliveries(w);
      } }, "Replay all failed")),
      table(["Event", "State", { label: "Attempts", num: true }, "Last answer", "Created", ""], page.data.map((d) => h("tr", {},
        h("td", {}, d.event_type), h("td", {}, badge(d.state)), h("td", { class: "num" }, d.attempts),
        h("td", {}, d.last_status ? `HTTP ${d.last_status}` : "", d.last_error ? h("div", { class: "muted" }, d.last_error) : null),
        h("td", {}, when(d.created_at)),
        h("td", {}, d.state === "failed" ? h("button", { type: "button", onclick: async () => {
          await attempt(() => api("POST", `/v1/webhooks/${w.id}/deliveries/${d.id}/replay`), "Delivery queued again.");
          showDeliveries(w);
        } }, "Replay") : null))), "No deliveries yet.")));
  };
  const refresh = async () => {
    const hooks = await all("/v1/webhooks");
    list.replaceChildren(table(["URL", "Events", "State", ""], hooks.map((w) => h("tr", {},
      h("td", {}, w.url, w.description ? h("div", { class: "muted" }, w.description) : null),
      h("td", {}, w.event_types.length ? w.event_types.join(", ") : "all"),
      h("td", {}, badge(w.enabled ? "on" : "off"), w.disabled_reason ? h("div", { class: "muted" }, w.disabled_reason) : null),
      h("td", {}, h("div", { class: "row" },
        h("button", { type: "button", onclick: () => showDeliveries(w) }, "Deliveries"),
        h("button", { type: "button", onclick: async () => {
          await attempt(() => api("PATCH", `/v1/webhooks/${w.id}`, { enabled: !w.enabled }), w.enabled ? "Endpoint disabled." : "Endpoint enabled.");
          refresh();
        } }, w.enabled ? "Disable" : "Enable"),
        h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm(`Delete the endpoint ${w.url}?`)) return;
          await attempt(() => api("DELETE", `/v1/webhooks/${w.id}`), "Endpoint deleted.");
          refresh();
        } }, "Delete"))))), "No endpoints yet."));
  };
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const chosen = types.filter((t) => t.checked).map((t) => t.value);
    const w = await attempt(() => api("POST", "/v1/webhooks", { url: url.value, description: description.value || undefined, event_types: chosen }));
    if (!w) return;
    notify("info", "Endpoint added. Its signing secret is shown once, below: keep it.");
    deliveries.replaceChildren(h("section", { class: "card" }, h("h2", {}, "Signing secret"), h("p", { class: "secret" }, w.secret || "")));
    url.value = ""; description.value = "";
    refresh();
  } },
  h("h2", {}, "Add an endpoint"),
  field("URL", url), field("Description (optional)", description),
  h("fieldset", {}, h("legend", {}, "Events (none chosen: all)"), h("div", {}, EVENT_TYPES.map((t, i) => h("label", { class: "inline" }, types[i], t)))),
  h("p", {}, h("button", { class: "primary", type: "submit" }, "Add endpoint")));
  render("Webhooks", list, deliveries, form);
  await refresh();
}

// ---- Routing.

function updateChrome() {
  const signedIn = !!sessionStorage.getItem(KEY_STORE);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  const section = (location.hash.split("/")[1] || "numbers");
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${section}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  if (leaveView) { leaveView(); leaveView = null; }
  updateChrome();
  if (!sessionStorage.getItem(KEY_STORE)) { signInView(); return; }
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const views = {
    numbers: () => numbersView(),
    templates: () => templatesView(),
    campaigns: () => (parts[1] === "new" ? newCampaignView() : parts[1] ? campaignView(parts[1]) : campaignsView()),
    messages: () => messagesView(),
    webhooks: () => webhooksView(),
  };
  const view = views[parts[0]] || views.numbers;
  try {
    const leave = await view();
    if (typeof leave === "function") leaveView = leave;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) notify("error", err.message, err instanceof ApiError ? err.details() : []);
  }
  document.getElementById("main").focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => { clearNotice(); route(); });
document.getElementById("sign-out").addEventListener("click", () => signOut());
route();
