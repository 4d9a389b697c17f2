// The Payouts admin dashboard: a small static front end over the admin REST API (the same
// contract scripts use). No inline script, no innerHTML with data: every text is a text node.
"use strict";

const TOKEN_KEY = "payoutsAdminToken";
let expiryTimer = null;
// The signed-in admin's role, from GET /api/admin/me: "approver" or "viewer". Every element
// marked data-change (a button or form that POSTs) shows only to an approver (app.css); the
// gateway refuses a viewer's change anyway (403), the page only spares it the attempt.
let role = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Amounts are integer cents: formatted exactly, never through floating point.
function money(cents, currency) {
  const sign = cents < 0 ? "-" : "";
  const abs = Math.abs(Number(cents) || 0);
  const whole = Math.floor(abs / 100).toLocaleString("en-US");
  const frac = String(abs % 100).padStart(2, "0");
  const symbol = (currency || "usd").toLowerCase() === "usd" ? "$" : (currency || "").toUpperCase() + " ";
  return `${sign}${symbol}${whole}.${frac}`;
}

// A time in the admin's zone, UTC on hover.
function time(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  const date = new Date(iso);
  return el("time", { datetime: iso, title: date.toISOString().replace(".000Z", "Z") + " (UTC)" }, date.toLocaleString());
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch (_) {
    return null;
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  role = null;
  delete document.body.dataset.role;
  if (expiryTimer) clearTimeout(expiryTimer);
  if (haltTimer) clearInterval(haltTimer);
  haltTimer = null;
  const banner = document.getElementById("halt");
  banner.hidden = true;
  delete banner.dataset.shown;
  render(message);
}

// Calls the admin API; answers {status, body}. A 401 signs out (the token expired or was refused).
async function api(method, path, body, extraHeaders) {
  const headers = { Authorization: "Bearer " + token(), ...(extraHeaders || {}) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    return { status: 0, body: { error: "the gateway did not answer: " + error.message } };
  }
  let json = null;
  try {
    json = await response.json();
  } catch (_) {
    json = { error: `${response.status} ${response.statusText}` };
  }
  if (response.status === 401) signOut("Signed out: " + (json.error || "the token was refused"));
  return { status: response.status, body: json };
}

function errorLine(result) {
  return el("p", { class: "error", role: "alert" }, `${result.status || "no answer"}: ${result.body.error || "failed"}`);
}

function loading(view) {
  view.replaceChildren(el("p", { class: "muted", "aria-busy": "true" }, "Loading…"));
}

function table(headers, rows, empty) {
  if (rows.length === 0) return el("p", { class: "muted" }, empty);
  return el("div", { class: "table-wrap" },
    el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows)));
}

function labelled(id, label, control) {
  control.id = id;
  return el("div", {}, el("label", { for: id }, label), control);
}

// ---- Payouts -------------------------------------------------------------------------------

const STATUSES = ["pending_approval", "pending", "processing", "completed", "failed", "reversed"];

async function payoutsPage(view, params) {
  const status = el("select", {}, el("option", { value: "" }, "any"), STATUSES.map((s) => el("option", { value: s, selected: params.get("status") === s }, s)));
  const user = el("input", { type: "text", value: params.get("userId") || "", placeholder: "user id" });
  const form = el("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (status.value) query.set("status", status.value);
    if (user.value.trim()) query.set("userId", user.value.trim());
    location.hash = "#/payouts?" + query.toString();
  } }, labelled("f-status", "Status", status), labelled("f-user", "User", user), el("button", { type: "submit" }, "Filter"));
  const list = el("div", {});
  view.replaceChildren(el("h1", {}, "Payouts"), form, list);
  const query = new URLSearchParams(params);
  query.set("limit", "50");
  await payoutRows(list, query);
}

async function payoutRows(list, query) {
  loading(list);
  const result = await api("GET", "/api/admin/payouts?" + query.toString());
  if (result.status !== 200) return list.replaceChildren(errorLine(result));
  const rows = result.body.payouts.map((p) => el("tr", {},
    el("td", {}, el("a", { href: "#/payouts/" + encodeURIComponent(p.id) }, p.id)),
    el("td", {}, p.userId), el("td", {}, money(p.amountCents, p.currency)),
    el("td", {}, p.status, p.outcomeUnknown ? " (outcome unknown)" : "", p.parked ? " (parked)" : ""),
    el("td", {}, time(p.requestedAt)), el("td", {}, p.stripeTransferId || "—")));
  const next = result.body.nextPageToken;
  list.replaceChildren(table(["Payout", "User", "Amount", "Status", "Requested", "Transfer"], rows, "No payouts."),
    ...(next ? [el("button", { type: "button", onclick: () => { query.set("pageToken", next); payoutRows(list, query); } }, "Next page")] : []));
}

function stripeLink(kind, id) {
  if (!id) return el("span", { class: "muted" }, "—");
  return el("a", { href: `https://dashboard.stripe.com/${kind}/${encodeURIComponent(id)}`, rel: "noopener noreferrer", target: "_blank" }, id);
}

async function payoutPage(view, id) {
  loading(view);
  const result = await api("GET", "/api/admin/payouts/" + encodeURIComponent(id));
  if (result.status !== 200) return view.replaceChildren(el("h1", {}, "Payout " + id), errorLine(result));
  const p = result.body.payout;
  const facts = [
    ["User", p.userId], ["Amount", money(p.amountCents, p.currency)], ["Status", p.status],
    ["Stripe transfer", stripeLink("transfers", p.stripeTransferId)],
    ["Bank payout", stripeLink("payouts", p.stripePayoutId)],
    ["Reversed", money(p.amountReversedCents, p.currency)], ["Retries", p.retryCount],
    ["Next retry", time(p.nextRetryAt)], ["Failure", p.failureCode ? `${p.failureCode}: ${p.failureReason || ""}` : "—"],
    ["Flags", p.flags.join(", ") || "—"], ["Requested", time(p.requestedAt)], ["Completed", time(p.completedAt)],
  ];
  const actions = el("div", {});
  if (p.parked) {
    actions.append(el("button", { type: "button", "data-change": true, onclick: async () => {
      const answer = await api("POST", `/api/admin/payouts/${encodeURIComponent(p.id)}/resume`);
      actions.replaceChildren(answer.status === 200 ? el("p", {}, "Resumed: " + answer.body.status) : errorLine(answer));
    } }, "Resume"));
  }
  if (["processing", "completed"].includes(p.status) && p.stripeTransferId) {
    const amount = el("input", { type: "number", min: "1", step: "1", required: true });
    const notes = el("input", { type: "text", maxlength: "2000" });
    const outcome = el("div", { "aria-live": "polite" });
    // One Idempotency-Key per reversal, kept until a definite answer: a lost answer (network
    // error, 5xx, 408, 429) leaves the outcome unknown, so the next submit sends the same
    // request with the same key (Stripe and the service replay it, never reverse twice), and a
    // different request is refused until the unknown one has its answer.
    let unknown = null;
    const definite = (status) => status >= 200 && status < 500 && status !== 408 && status !== 429;
    const send = async (key, body) => {
      const answer = await api("POST", `/api/admin/payouts/${encodeURIComponent(p.id)}/reverse`, body, { "Idempotency-Key": key });
      if (!definite(answer.status)) {
        unknown = { key, body };
        return outcome.replaceChildren(errorLine(answer),
          el("p", { class: "error" }, "The outcome is unknown: the reversal may have been made. Send the same request again (same key) to learn it."),
          el("button", { type: "button", onclick: () => send(key, body) }, "Send the same request again"));
      }
      unknown = null;
      if (answer.status === 200) return outcome.replaceChildren(el("p", {}, `Reversed (${answer.body.reversal ? answer.body.reversal.id : ""}).`));
      outcome.replaceChildren(errorLine(answer));
    };
    actions.append(el("form", { class: "filters", "data-change": true, onsubmit: async (event) => {
      event.preventDefault();
      const body = { amountCents: Number(amount.value), notes: notes.value };
      if (unknown) {
        if (unknown.body.amountCents !== body.amountCents || unknown.body.notes !== body.notes) {
          return outcome.replaceChildren(el("p", { class: "error" },
            `The reversal of ${money(unknown.body.amountCents, p.currency)} has an unknown outcome: send it again before another.`),
            el("button", { type: "button", onclick: () => send(unknown.key, unknown.body) }, "Send the same request again"));
        }
        return send(unknown.key, unknown.body);
      }
      if (!confirm(`Reverse ${money(body.amountCents, p.currency)} of ${p.id}?`)) return;
      await send(crypto.randomUUID(), body);
    } }, labelled("rev-amount", "Reverse (cents)", amount), labelled("rev-notes", "Notes", notes), el("button", { type: "submit", class: "reject" }, "Reverse"), outcome));
  }
  const timeline = el("ol", { class: "timeline" }, result.body.auditLog.map((e) => el("li", {},
    time(e.timestamp), ` ${e.fromStatus || "new"} → ${e.toStatus} `, el("strong", {}, e.eventType), ` by ${e.actor || "?"}: ${e.reason}`,
    e.stripeEventId ? ` (${e.stripeEventId})` : "")));
  const intents = (p.reversalIntents || []).length === 0 ? el("p", {}, "None.") : el("ol", { class: "timeline" }, p.reversalIntents.map((r) => el("li", {},
    time(r.createdAt), ` ${money(r.amountCents, p.currency)} by ${r.requestedBy}: `, el("strong", {}, r.state),
    r.reversalId ? ` (${r.reversalId})` : "", r.detail ? ` — ${r.detail}` : "", ` — ${r.notes}`)));
  view.replaceChildren(el("h1", {}, "Payout " + p.id),
    el("dl", { class: "card" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    actions, el("h2", {}, "Reversals"), intents, el("h2", {}, "Audit log"), timeline);
}

// ---- Webhooks ------------------------------------------------------------------------------

async function webhooksPage(view) {
  loading(view);
  const stats = await api("GET", "/api/admin/webhooks/stats");
  const failed = await api("GET", "/api/admin/webhooks/events?status=failed&limit=100");
  const processing = await api("GET", "/api/admin/webhooks/events?status=processing&limit=100");
  const statsCard = stats.status === 200
    ? el("p", { class: "card" }, `Total ${stats.body.total} · processing ${stats.body.processing} (waiting ${stats.body.waiting}) · completed ${stats.body.completed} · failed ${stats.body.failed} · backfilled ${stats.body.backfilled}`,
      stats.body.alertsOwed ? ` · alerts not raised yet ${stats.body.alertsOwed}` : "")
    : errorLine(stats);
  // Events waiting for an owner service that could not answer: never parked for it, applied
  // once the service is back (at most 5 minutes later).
  const waiting = processing.status === 200 ? processing.body.events.filter((e) => e.waitingFor) : [];
  const waitingRows = waiting.map((e) => el("tr", {},
    el("td", {}, el("details", {}, el("summary", {}, e.eventId),
      el("p", {}, `endpoint ${e.webhookEndpoint}, attempts ${e.attempts}, source ${e.source}`),
      el("p", {}, "Last answer: ", e.error || "—"))),
    el("td", {}, e.eventType),
    el("td", {}, `waiting for ${e.waitingFor} since `, time(e.waitingSince)),
    el("td", {}, "next try ", time(e.nextAttemptAt))));
  const rows = failed.status === 200 ? failed.body.events.map((e) => {
    const outcome = el("td", { "aria-live": "polite" });
    return el("tr", {}, el("td", {}, el("details", {}, el("summary", {}, e.eventId),
      el("p", {}, `endpoint ${e.webhookEndpoint}, attempts ${e.attempts} (refused ${e.refusals}), deliveries ${e.deliveries}, source ${e.source}`),
      el("p", {}, e.alertOwed ? "Critical alert: not raised yet (retried until the notifications service confirms it)" : "Critical alert: raised"),
      el("p", {}, "Error: ", e.error || "—"), el("p", {}, "Outcome: ", e.outcome || "—"))),
      el("td", {}, e.eventType), el("td", {}, time(e.failedAt)),
      el("td", {}, el("button", { type: "button", "data-change": true, onclick: async () => {
        const answer = await api("POST", `/api/admin/webhooks/events/${encodeURIComponent(e.eventId)}/retry?endpoint=${e.webhookEndpoint}`);
        outcome.replaceChildren(answer.status === 200 ? "Retrying" : errorLine(answer));
      } }, "Retry")), outcome);
  }) : [];
  const since = el("input", { type: "datetime-local", required: true });
  const backfillOutcome = el("div", { "aria-live": "polite" });
  const backfill = el("form", { class: "filters", "data-change": true, onsubmit: async (event) => {
    event.preventDefault();
    const answer = await api("POST", "/api/admin/webhooks/backfill", { since: new Date(since.value).toISOString() });
    backfillOutcome.replaceChildren(answer.status === 200
      ? el("p", {}, `Listed ${answer.body.listed}, stored ${answer.body.stored}, already had ${answer.body.duplicates} (${answer.body.accounts} connected accounts).`)
      : errorLine(answer));
  } }, labelled("bf-since", "Backfill undelivered events since (at most 30 days)", since), el("button", { type: "submit" }, "Backfill"), backfillOutcome);
  view.replaceChildren(el("h1", {}, "Webhooks"), statsCard,
    el("h2", {}, "Waiting for a service"),
    processing.status === 200 ? table(["Event", "Type", "Waiting", "Next"], waitingRows, "No event is waiting for a service.") : errorLine(processing),
    el("h2", {}, "Failed events"),
    failed.status === 200 ? table(["Event", "Type", "Failed", "", ""], rows, "No failed events.") : errorLine(failed),
    el("h2", {}, "Backfill"), backfill);
}

// ---- Alerts --------------------------------------------------------------------------------

// Links to the previous/next page of a list: the page token rides in the URL (the Back button
// returns to the page before), and a changed filter starts again from the first page.
function pager(page, params, next) {
  const first = new URLSearchParams(params);
  first.delete("pageToken");
  const later = new URLSearchParams(params);
  if (next) later.set("pageToken", next);
  const links = [
    params.get("pageToken") ? el("a", { href: `#/${page}?${first}` }, "First page") : null,
    next ? el("a", { href: `#/${page}?${later}` }, "Next page") : null,
  ].filter(Boolean);
  return links.length ? el("nav", { class: "pager", "aria-label": "Pages" }, links) : null;
}

// Alerts carry a level (1 recorded, 2 admin team, 3 leads paged) and the signal that set it;
// an alert without a level (raised before levels existed) shows none and matches no level.
const LEVELS = ["1", "2", "3"];

async function alertsPage(view, params) {
  const status = params.get("status") || "open";
  const level = LEVELS.includes(params.get("level")) ? params.get("level") : "";
  loading(view);
  const query = new URLSearchParams({ limit: "100", status });
  if (level) query.set("level", level);
  if (params.get("pageToken")) query.set("pageToken", params.get("pageToken"));
  const result = await api("GET", "/api/admin/alerts?" + query.toString());
  const refilter = (changes) => {
    const next = new URLSearchParams({ status, ...(level ? { level } : {}), ...changes });
    if (!next.get("level")) next.delete("level");
    location.hash = "#/alerts?" + next.toString();
  };
  const picker = el("select", { onchange: (event) => refilter({ status: event.target.value }) },
    ["open", "acknowledged", "resolved", "all"].map((s) => el("option", { value: s, selected: s === status }, s)));
  const levels = el("select", { onchange: (event) => refilter({ level: event.target.value }) },
    el("option", { value: "" }, "any"), LEVELS.map((l) => el("option", { value: l, selected: l === level }, `level ${l}`)));
  const filters = el("div", { class: "filters" }, labelled("alerts-status", "Show", picker), labelled("alerts-level", "Level", levels));
  if (result.status !== 200) return view.replaceChildren(el("h1", {}, "Alerts"), filters, errorLine(result));
  // The gateway filters by level; filtering here too keeps the page right against one that
  // does not know the parameter yet.
  const alerts = result.body.alerts.filter((a) => !level || String(a.level ?? "") === level);
  const cards = alerts.map((a) => {
    const notes = el("input", { type: "text", maxlength: "2000" });
    const outcome = el("div", { "aria-live": "polite" });
    const act = async (action, body) => {
      const answer = await api("POST", `/api/admin/alerts/${encodeURIComponent(a.id)}/${action}`, body);
      outcome.replaceChildren(answer.status === 200 ? el("p", {}, action === "resolve" ? "Resolved." : "Acknowledged.") : errorLine(answer));
      if (answer.status === 200) refreshHalt();
    };
    return el("article", { class: "card", "data-alert": a.id, "data-level": a.level ?? "" },
      el("h2", {}, a.level ? el("span", { class: `level level-${a.level}` }, `Level ${a.level}`) : null, a.level ? " " : "", `[${a.severity}] ${a.title}`),
      el("p", {}, a.message || a.description),
      el("p", { class: "muted" }, a.type, a.signal ? ` · signal ${a.signal}` : "", " · ", time(a.timestamp), a.resolved ? " · resolved" : ""),
      a.resolved ? null : el("div", { class: "filters", "data-change": true },
        el("button", { type: "button", onclick: () => act("acknowledge") }, "Acknowledge"),
        labelled("notes-" + a.id, "Resolution notes", notes),
        el("button", { type: "button", onclick: () => act("resolve", { notes: notes.value }) }, "Resolve")),
      outcome);
  });
  const pageParams = new URLSearchParams({ status, ...(level ? { level } : {}) });
  if (params.get("pageToken")) pageParams.set("pageToken", params.get("pageToken"));
  view.replaceChildren(el("h1", {}, "Alerts"), filters,
    ...(cards.length ? cards : [el("p", { class: "muted" }, level ? `No level ${level} alerts on this page.` : "No alerts.")]),
    pager("alerts", pageParams, result.body.nextPageToken));
}

// ---- Reconciliation ------------------------------------------------------------------------

async function reconciliationPage(view) {
  loading(view);
  const result = await api("GET", "/api/admin/reconciliation?limit=10");
  const outcome = el("div", { "aria-live": "polite" });
  const run = el("button", { type: "button", "data-change": true, onclick: async () => {
    run.disabled = true;
    const answer = await api("POST", "/api/admin/reconciliation/run");
    run.disabled = false;
    if (answer.status === 200) reconciliationPage(view); else outcome.replaceChildren(errorLine(answer));
  } }, "Run a reconciliation now");
  if (result.status !== 200) return view.replaceChildren(el("h1", {}, "Reconciliation"), errorLine(result));
  const reports = result.body.reports.map((r) => el("article", { class: "card" },
    el("h2", {}, `${r.status} · `, time(r.startedAt)),
    el("p", { class: "muted" }, `${r.transfersChecked} transfers, ${r.payoutsChecked} payouts, since `, time(r.since), ` · ${r.triggeredBy}`),
    r.error ? el("p", { class: "error" }, r.error) : null,
    table(["Kind", "Payout", "Transfer", "Ours", "Stripe", "Detail"], r.findings.map((f) => el("tr", {},
      el("td", {}, f.kind), el("td", {}, f.payoutId ? el("a", { href: "#/payouts/" + encodeURIComponent(f.payoutId) }, f.payoutId) : "—"),
      el("td", {}, f.transferId || "—"), el("td", {}, f.ours), el("td", {}, f.stripe), el("td", {}, f.detail))), "The books agree.")));
  view.replaceChildren(el("h1", {}, "Reconciliation"), run, outcome, ...(reports.length ? reports : [el("p", { class: "muted" }, "No reports yet.")]));
}

// ---- Approvals (design §7) -------------------------------------------------------------------

const FLAGS = ["EXCEEDS_SINGLE_LIMIT", "REQUIRES_ADMIN_APPROVAL", "NEW_ACCOUNT", "EXCEEDS_NEW_ACCOUNT_LIMIT",
  "EXCEEDS_DAILY_COUNT_LIMIT", "EXCEEDS_DAILY_AMOUNT_LIMIT", "EXCEEDS_MONTHLY_AMOUNT_LIMIT", "SUSPICIOUS_FREQUENCY",
  "TOO_SOON", "LARGE_FIRST_PAYOUT", "LARGE_PERCENTAGE_OF_EARNINGS", "RECENT_REFUND_OR_DISPUTE", "INSUFFICIENT_BALANCE"];

async function approvalsPage(view, params) {
  const status = el("select", {}, ["pending", "approved", "rejected"].map((s) => el("option", { value: s, selected: (params.get("status") || "pending") === s }, s)));
  const min = el("input", { type: "number", min: "0", step: "1", value: params.get("minAmount") || "", placeholder: "cents" });
  const max = el("input", { type: "number", min: "0", step: "1", value: params.get("maxAmount") || "", placeholder: "cents" });
  const flag = el("select", {}, el("option", { value: "" }, "any"), FLAGS.map((f) => el("option", { value: f, selected: params.get("flag") === f }, f)));
  const form = el("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ status: status.value });
    if (min.value) query.set("minAmount", min.value);
    if (max.value) query.set("maxAmount", max.value);
    if (flag.value) query.set("flag", flag.value);
    location.hash = "#/approvals?" + query.toString();
  } }, labelled("a-status", "Status", status), labelled("a-min", "Min amount (cents)", min), labelled("a-max", "Max amount (cents)", max),
  labelled("a-flag", "Flag", flag), el("button", { type: "submit" }, "Filter"));
  const list = el("div", {});
  view.replaceChildren(el("h1", {}, "Approval queue"), el("p", { class: "muted" }, "Oldest request first."), form, list);
  loading(list);
  const pageParams = new URLSearchParams(params);
  if (!pageParams.has("status")) pageParams.set("status", "pending");
  pageParams.delete("limit");
  const query = new URLSearchParams(pageParams);
  query.set("limit", "100");
  const result = await api("GET", "/api/admin/payout-approvals?" + query.toString());
  if (result.status !== 200) return list.replaceChildren(errorLine(result));
  const cards = result.body.approvals.map((a) => approvalCard(a));
  list.replaceChildren(...(cards.length ? cards : [el("p", { class: "muted" }, "Nothing waits for a decision.")]),
    pager("approvals", pageParams, result.body.nextPageToken));
}

function approvalCard(a) {
  const c = a.userContext || {};
  const notes = el("textarea", { rows: "2", maxlength: "2000" });
  const outcome = el("div", { "aria-live": "polite" });
  const decide = async (action) => {
    if (action === "reject" && !notes.value.trim()) {
      outcome.replaceChildren(el("p", { class: "error", role: "alert" }, "A rejection needs notes saying why."));
      notes.focus();
      return;
    }
    if (!confirm(`${action === "approve" ? "Approve" : "Reject"} ${money(a.amountCents, a.currency)} for ${a.userId}?`)) return;
    const answer = await api("POST", "/api/admin/payout-approval", { approvalId: a.id, action, notes: notes.value });
    if (answer.status === 200) {
      outcome.replaceChildren(el("p", { role: "status" }, answer.body.message + (answer.body.transferId ? ` (transfer ${answer.body.transferId})` : "")));
      if (answer.body.approval) dual.replaceWith(dual = dualControl(answer.body.approval));
      buttons.hidden = true;
    } else if (answer.status === 409 && answer.body.approval && answer.body.approval.status === "pending") {
      // Dual control: this admin has already given one of the approvals.
      outcome.replaceChildren(el("p", { class: "error", role: "alert" }, answer.body.error));
      dual.replaceWith(dual = dualControl(answer.body.approval));
      buttons.hidden = true;
    } else if (answer.status === 409 && answer.body.approval) {
      const other = answer.body.approval;
      outcome.replaceChildren(el("p", { class: "error", role: "alert" },
        `Already ${other.status} by ${other.reviewedBy || "someone"} at `, time(other.reviewedAt), other.reviewNotes ? `: ${other.reviewNotes}` : ""));
      buttons.hidden = true;
    } else {
      outcome.replaceChildren(errorLine(answer));
    }
  };
  const buttons = el("div", { class: "filters", "data-change": true }, labelled("notes-" + a.id, "Notes (required to reject)", notes),
    el("button", { type: "button", class: "approve", onclick: () => decide("approve") }, "Approve"),
    el("button", { type: "button", class: "reject", onclick: () => decide("reject") }, "Reject"));
  buttons.hidden = a.status !== "pending";
  let dual = dualControl(a);
  return el("article", { class: "card", "data-approval": a.id },
    el("h2", {}, `${money(a.amountCents, a.currency)} for ${a.userId}`),
    el("p", {}, a.reason, " · ", a.flags.join(", ") || "no flags", " · requested ", time(a.requestedAt)),
    el("p", { class: "muted" }, `Account ${c.accountAgeDays} days old · lifetime earnings ${money(c.lifetimeEarnings)} · ${c.completedPayoutCount} payouts (${money(c.completedPayoutAmount)}) · ${c.recentRefundCount} recent refunds · ${c.recentDisputeCount} recent disputes`),
    dual,
    a.status !== "pending" ? el("p", {}, `${a.status} by ${a.reviewedBy || "?"} `, time(a.reviewedAt), a.reviewNotes ? `: ${a.reviewNotes}` : "") : null,
    buttons, outcome);
}

// Dual control (APPROVAL_DUAL_CONTROL_CENTS): "1 of 2 approvals", who approved first, when,
// with their notes. Nothing for an approval one admin decides.
function dualControl(a) {
  const required = a.approvalsRequired || 1;
  const given = a.approvals || [];
  if (required < 2) return el("span", { hidden: true });
  return el("p", { class: "dual", "data-approvals": `${given.length}/${required}` },
    el("strong", {}, `${given.length} of ${required} approvals`),
    given.map((g, i) => [` · ${i === 0 ? "first " : ""}approved by ${g.reviewer} `, time(g.approvedAt), g.notes ? `: ${g.notes}` : ""]),
    a.status === "pending" ? ` · ${given.length ? "a different admin" : "two different admins"} must approve` : "");
}

// ---- Balance (design §5) ---------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// The snapshots (oldest first) as a line chart of the available balance, with the reserve.
function chart(snapshots) {
  const width = 720, height = 220, pad = 40;
  if (snapshots.length === 0) return el("p", { class: "muted" }, "No snapshots yet.");
  const values = snapshots.flatMap((s) => [s.availableBalance, s.requiredReserve]);
  const top = Math.max(1, ...values), count = Math.max(1, snapshots.length - 1);
  const x = (i) => pad + (i * (width - 2 * pad)) / count;
  const y = (v) => height - pad - (v * (height - 2 * pad)) / top;
  const line = (key) => snapshots.map((s, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(s[key]).toFixed(1)}`).join(" ");
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Available balance and required reserve over the last snapshots", width: "100%" },
    svg("title", {}, "Available balance (blue) and required reserve (red)"),
    svg("path", { d: line("availableBalance"), fill: "none", stroke: "#0969da", "stroke-width": 2, class: "balance-line" }),
    svg("path", { d: line("requiredReserve"), fill: "none", stroke: "#cf222e", "stroke-width": 2, "stroke-dasharray": "6 4", class: "reserve-line" }),
    ...snapshots.map((s, i) => svg("circle", { cx: x(i).toFixed(1), cy: y(s.availableBalance).toFixed(1), r: 4, fill: "#0969da", class: "balance-point" },
      svg("title", {}, `${s.timestamp}: ${money(s.availableBalance)} available, ${money(s.requiredReserve)} reserve`))),
    svg("text", { x: pad, y: pad - 10, "font-size": 12 }, money(top)),
    svg("text", { x: pad, y: height - pad + 16, "font-size": 12 }, snapshots[0].timestamp.slice(0, 10)),
    svg("text", { x: width - pad - 70, y: height - pad + 16, "font-size": 12 }, snapshots[snapshots.length - 1].timestamp.slice(0, 10)));
}

async function balancePage(view) {
  loading(view);
  const result = await api("GET", "/api/admin/balance");
  const outcome = el("div", { "aria-live": "polite" });
  const inForce = result.status === 200 ? result.body.data.transferPause : null;
  // The notes go with a pause or a resume (required to lift an escalation halt). A resume
  // names the cause it lifts: sent again after a lost answer, it is refused (409) rather than
  // also lifting the pause the first one left in force (the balance's or an admin's).
  const notes = el("input", { type: "text", maxlength: 255, placeholder: "what was checked (required to lift a halt)" });
  const action = (label, method, path, body) => el("button", { type: "button", onclick: async () => {
    const answer = await api(method, path, body ? body() : undefined);
    if (answer.status === 200) { balancePage(view); refreshHalt(); } else outcome.replaceChildren(errorLine(answer));
  } }, label);
  const reason = () => (notes.value.trim() ? { reason: notes.value.trim() } : {});
  const controls = el("div", { class: "filters", "data-change": true }, action("Run check now", "POST", "/api/admin/balance/check"),
    labelled("pause-notes", "Notes", notes),
    action("Pause transfers", "POST", "/api/admin/balance/pause", reason),
    action("Resume transfers", "POST", "/api/admin/balance/resume",
      () => ({ ...reason(), ...(inForce && inForce.cause ? { cause: inForce.cause } : {}) })));
  if (result.status !== 200) return view.replaceChildren(el("h1", {}, "Balance"), controls, outcome, errorLine(result));
  const d = result.body.data, b = d.balanceStatus, pause = d.transferPause;
  view.replaceChildren(el("h1", {}, "Balance"),
    el("section", { class: "card" }, el("h2", { class: "status-" + b.thresholdStatus }, b.thresholdStatus.toUpperCase()),
      el("p", {}, `Available ${money(b.availableBalance)} · obligations ${money(b.pendingObligations)} · reserve ${money(b.requiredReserve)} · available for payouts ${money(b.availableForPayouts)}`),
      el("p", {}, `Trend ${d.trend.direction} (${money(d.trend.averageChange)} a day) · days of coverage ${b.daysOfCoverage ?? "—"}`),
      el("p", {}, pause.paused ? `Transfers paused (${pause.cause}) by ${pause.changedBy || "?"}: ${pause.reason || ""}` : "Transfers running",
        pause.beneath ? ` · under it, a ${pause.beneath} pause that lifting the halt leaves in force` : "")),
    controls, outcome, el("h2", {}, "Last 30 snapshots"), chart([...d.snapshots].reverse()));
}

// ---- Shell ---------------------------------------------------------------------------------

// The transfer halt, on every page while it is on: why (an escalation halt's reason names its
// alert), by whom, since when. Checked on every page view and every 30 seconds.
let haltTimer = null;

async function refreshHalt() {
  const banner = document.getElementById("halt");
  if (!token()) { banner.hidden = true; return; }
  const answer = await api("GET", "/api/admin/balance/pause");
  if (answer.status !== 200) return; // keep what is shown: a failed read lifts nothing
  const pause = answer.body.transferPause || {};
  const shown = JSON.stringify(pause);
  if (banner.dataset.shown === shown) return; // unchanged: not announced again
  banner.dataset.shown = shown;
  if (!pause.paused) { banner.hidden = true; banner.replaceChildren(); return; }
  const reason = pause.reason || "";
  const escalation = reason.match(/^escalation:\s*(\S+)/);
  banner.replaceChildren(
    el("strong", {}, "Payout transfers are halted"), ` (${pause.cause || "cause unknown"})`,
    reason ? `: ${reason}` : "", pause.changedBy ? ` · by ${pause.changedBy}` : "", pause.changedAt ? " · since " : "", pause.changedAt ? time(pause.changedAt) : "",
    " · ", escalation ? el("a", { href: "#/alerts?status=all" }, `alert ${escalation[1]}`) : el("a", { href: "#/balance" }, "balance"),
    " · payouts wait; an admin resumes on the Balance page.");
  banner.dataset.cause = pause.cause || "";
  banner.hidden = false;
}

const PAGES = {
  approvals: approvalsPage,
  payouts: payoutsPage,
  balance: balancePage,
  webhooks: webhooksPage,
  alerts: alertsPage,
  reconciliation: reconciliationPage,
};

// Asks the gateway who the token is and what it may do; actions stay hidden until it says
// "approver". A token the gateway refuses (no valid role) signs out with its reason.
async function loadRole(who) {
  const answer = await api("GET", "/api/admin/me");
  if (answer.status === 200) {
    role = answer.body.role;
    document.body.dataset.role = role;
    who.textContent = "Signed in as " + answer.body.subject + (role === "viewer" ? " (viewer: read only)" : "");
  } else if (answer.status === 403) {
    signOut("Signed out: " + (answer.body.error || "this token is not an admin's"));
  }
}

function render(message) {
  const jwt = token();
  const signin = document.getElementById("signin");
  const nav = document.getElementById("nav");
  const view = document.getElementById("view");
  const who = document.getElementById("who");
  const signout = document.getElementById("signout");
  const payload = jwt ? claims(jwt) : null;
  if (!payload || (payload.exp && payload.exp * 1000 <= Date.now())) {
    if (jwt) sessionStorage.removeItem(TOKEN_KEY);
    signin.hidden = false; nav.hidden = true; signout.hidden = true; who.textContent = "";
    view.replaceChildren();
    document.getElementById("signin-error").textContent = message || (jwt ? "The token has expired or cannot be read." : "");
    return;
  }
  signin.hidden = true; nav.hidden = false; signout.hidden = false;
  who.textContent = "Signed in as " + (payload.sub || "?") + (role === "viewer" ? " (viewer: read only)" : "");
  if (role === null) loadRole(who);
  refreshHalt();
  if (!haltTimer) haltTimer = setInterval(refreshHalt, 30000);
  if (expiryTimer) clearTimeout(expiryTimer);
  if (payload.exp) expiryTimer = setTimeout(() => signOut("Signed out: the token expired."), payload.exp * 1000 - Date.now());
  const [path, query] = (location.hash.replace(/^#\/?/, "") || "approvals").split("?");
  const [page, id] = path.split("/");
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === "#/" + page) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  const params = new URLSearchParams(query || "");
  if (page === "payouts" && id) return payoutPage(view, decodeURIComponent(id));
  (PAGES[page] || approvalsPage)(view, params);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("token").value.trim();
    if (!claims(value)) { document.getElementById("signin-error").textContent = "That is not a JWT."; return; }
    sessionStorage.setItem(TOKEN_KEY, value);
    document.getElementById("token").value = "";
    render();
  });
  document.getElementById("signout").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", () => render());
  render();
});
