// llm-proxy admin: Alpine.js components (registered with Alpine.data, so the CSP build
// needs no eval) and the dashboard charts (uPlot). Loaded before Alpine, both deferred.
"use strict";

function csrfToken() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

// api calls the admin API and returns the decoded JSON, or throws an Error with the
// server's message (and .fields for field errors).
async function api(method, url, body) {
  const opts = { method, headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(url, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const err = new Error((data && data.error && data.error.message) || ("HTTP " + resp.status));
    err.status = resp.status;
    err.fields = data && data.error && data.error.fields;
    throw err;
  }
  return data;
}

function splitList(s) {
  return String(s || "").split(",").map((x) => x.trim()).filter((x) => x !== "");
}

function reload() { window.location.reload(); }

function numOrNull(v) {
  if (v === "" || v === null || v === undefined) { return null; }
  return Number(v);
}

function blankLimits() {
  return { rpm: "", tpm: "", max_parallel: "", budget_usd: "", budget_tokens: "", budget_period: "total" };
}

// limitsBody turns the limit fields into the API's "limits" object (empty fields are 0:
// no limit of the key's own). A key without a budget sends no period.
function limitsBody(l) {
  const n = (v) => (v === "" || v === null || v === undefined ? 0 : Number(v));
  const b = {
    rpm: n(l.rpm), tpm: n(l.tpm), max_parallel: n(l.max_parallel), budget_usd: n(l.budget_usd),
    budget_tokens: n(l.budget_tokens), budget_period: l.budget_period,
  };
  if (!b.budget_usd && !b.budget_tokens) { b.budget_period = ""; }
  return b;
}

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  // Plain http: the async clipboard is unavailable; select the text for the user instead.
  const range = document.createRange();
  const node = document.getElementById("new-key-value");
  if (node) { range.selectNodeContents(node); const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range); }
  try { document.execCommand("copy"); } catch (e) { /* the selection is there to copy by hand */ }
  return Promise.resolve();
}

document.addEventListener("alpine:init", () => {
  const Alpine = window.Alpine;

  Alpine.data("logout", () => ({
    async logout() {
      try { await api("POST", "/api/auth/logout"); } catch (e) { /* signed out anyway */ }
      window.location.href = "/login";
    },
  }));

  Alpine.data("loginForm", () => ({
    username: "", password: "", error: "", busy: false,
    async submit() {
      this.busy = true; this.error = "";
      try {
        const r = await api("POST", "/api/auth/login", { username: this.username, password: this.password });
        window.location.href = r.must_change_password ? "/password" : (this.$root.dataset.next || "/dashboard");
      } catch (e) {
        this.error = e.message;
      } finally {
        this.busy = false;
      }
    },
  }));

  Alpine.data("passwordForm", () => ({
    current: "", next: "", confirm: "", error: "", busy: false,
    async submit() {
      this.error = "";
      if (this.next !== this.confirm) { this.error = "The two new passwords differ."; return; }
      this.busy = true;
      try {
        await api("POST", "/api/auth/password", { current: this.current, new: this.next });
        window.location.href = "/dashboard";
      } catch (e) {
        this.error = e.message;
      } finally {
        this.busy = false;
      }
    },
  }));

  Alpine.data("upstreams", () => ({
    open: false, editing: 0, error: "", result: "",
    form: {},
    get formTitle() { return this.editing ? "Edit upstream" : "Add upstream"; },
    get keyPlaceholder() { return this.editing ? "leave empty to keep the stored key" : "sk-... (optional)"; },
    blank() { return { name: "", provider: "openai", base_url: "", api_key: "", models: "", weight: 1, enabled: true }; },
    add() { this.form = this.blank(); this.editing = 0; this.error = ""; this.open = true; },
    cancel() { this.open = false; },
    rowData() { return JSON.parse(this.$el.closest("tr").dataset.upstream); },
    edit() {
      const u = this.rowData();
      const star = u.deployments.length === 1 && u.deployments[0].public_model === "*";
      this.form = {
        name: u.name, provider: u.provider, base_url: u.base_url, api_key: "", weight: u.weight, enabled: u.enabled,
        models: star ? "" : u.deployments.map((d) => d.public_model).join(", "),
      };
      this.editing = u.id; this.error = ""; this.open = true;
      window.scrollTo(0, 0);
    },
    body() {
      const b = {
        name: this.form.name, provider: this.form.provider, base_url: this.form.base_url,
        weight: Number(this.form.weight), enabled: !!this.form.enabled, models: splitList(this.form.models),
      };
      if (!this.editing || this.form.api_key !== "") { b.api_key = this.form.api_key; }
      return b;
    },
    async save() {
      this.error = "";
      try {
        if (this.editing) { await api("PUT", "/api/upstreams/" + this.editing, this.body()); }
        else { await api("POST", "/api/upstreams", this.body()); }
        reload();
      } catch (e) { this.error = e.message; }
    },
    async toggle() {
      const u = this.rowData();
      const models = u.deployments.filter((d) => d.public_model !== "*");
      try {
        await api("PUT", "/api/upstreams/" + u.id, {
          name: u.name, provider: u.provider, base_url: u.base_url, weight: u.weight, enabled: !u.enabled,
          deployments: models,
        });
        reload();
      } catch (e) { this.result = e.message; }
    },
    async test() {
      const id = this.$el.dataset.id;
      this.result = "Testing…";
      try {
        const r = await api("POST", "/api/upstreams/" + id + "/test");
        this.result = r.ok
          ? "Connection OK in " + r.latency_ms.toFixed(0) + " ms; " + r.models.length + " models: " + r.models.slice(0, 8).join(", ")
          : "Connection failed: " + r.error;
      } catch (e) { this.result = e.message; }
    },
    async remove() {
      if (!window.confirm("Delete this upstream and its deployments?")) { return; }
      try { await api("DELETE", "/api/upstreams/" + this.$el.dataset.id); reload(); } catch (e) { this.result = e.message; }
    },
  }));

  Alpine.data("keys", () => ({
    open: false, error: "", created: "", copyLabel: "Copy",
    form: { name: "", models: "", expires_at: "", user_id: "" },
    lim: blankLimits(),
    limitsOpen: false, limitsID: 0, limitsName: "", logBodies: true,
    add() { this.open = true; this.limitsOpen = false; this.error = ""; this.lim = blankLimits(); },
    cancel() { this.open = false; },
    async create() {
      this.error = "";
      const b = { name: this.form.name, models: splitList(this.form.models), expires_at: this.form.expires_at };
      if (this.form.user_id) { b.user_id = Number(this.form.user_id); }
      // Only an admin's form has limit fields; a user's keys take the defaults.
      if (document.getElementById("new-limits")) { b.limits = limitsBody(this.lim); }
      try {
        const r = await api("POST", "/api/apikeys", b);
        this.created = r.key; this.open = false;
      } catch (e) { this.error = e.message; }
    },
    editLimits() {
      const k = JSON.parse(this.$el.closest("tr").dataset.key);
      const l = k.limits;
      this.lim = {
        rpm: l.rpm || "", tpm: l.tpm || "", max_parallel: l.max_parallel || "", budget_usd: l.budget_usd || "",
        budget_tokens: l.budget_tokens || "", budget_period: l.budget_period || "total",
      };
      this.logBodies = k.log_bodies;
      this.limitsID = k.id; this.limitsName = k.name; this.error = ""; this.open = false; this.limitsOpen = true;
      window.scrollTo(0, 0);
    },
    cancelLimits() { this.limitsOpen = false; },
    async saveLimits() {
      this.error = "";
      const b = { log_bodies: !!this.logBodies };
      // Only an admin's form has limit fields; a user edits the body-logging choice only.
      if (document.getElementById("edit-limits")) { b.limits = limitsBody(this.lim); }
      try { await api("PUT", "/api/apikeys/" + this.limitsID, b); reload(); }
      catch (e) { this.error = e.message; }
    },
    async copy() { await copyText(this.created); this.copyLabel = "Copied"; },
    done() { this.created = ""; reload(); },
    async set(enabled) {
      try { await api("PUT", "/api/apikeys/" + this.$el.dataset.id, { enabled }); reload(); } catch (e) { this.error = e.message; }
    },
    disable() { return this.set(false); },
    enable() { return this.set(true); },
    async revoke() {
      if (!window.confirm("Revoke the key " + this.$el.dataset.name + "? Clients using it stop working at once.")) { return; }
      try { await api("DELETE", "/api/apikeys/" + this.$el.dataset.id); reload(); } catch (e) { this.error = e.message; }
    },
  }));

  Alpine.data("routes", () => ({
    open: false, editing: false, error: "", result: "",
    form: { model: "", strategy: "", fallbacks: "" },
    get formTitle() { return this.editing ? "Route of " + this.form.model : "Configure a model"; },
    add() { this.form = { model: "", strategy: "", fallbacks: "" }; this.editing = false; this.error = ""; this.open = true; },
    edit() {
      const r = JSON.parse(this.$el.closest("tr").dataset.route);
      this.form = { model: r.model, strategy: r.strategy, fallbacks: r.fallbacks.join(", ") };
      this.editing = true; this.error = ""; this.open = true;
      window.scrollTo(0, 0);
    },
    cancel() { this.open = false; },
    async save() {
      this.error = "";
      try {
        await api("PUT", "/api/routes/" + encodeURIComponent(this.form.model.trim()),
          { strategy: this.form.strategy, fallbacks: splitList(this.form.fallbacks) });
        reload();
      } catch (e) { this.error = e.message; }
    },
    async remove() {
      const m = this.$el.dataset.model;
      if (!window.confirm("Reset the route of " + m + "? It goes back to the default strategy and no fallbacks.")) { return; }
      try { await api("DELETE", "/api/routes/" + encodeURIComponent(m)); reload(); } catch (e) { this.result = e.message; }
    },
  }));

  // semtry: the "try a prompt" box of the routes page.
  Alpine.data("semtry", () => ({
    prompt: "", model: "", error: "", text: "",
    async run() {
      this.error = ""; this.text = "Embedding…";
      const body = { prompt: this.prompt };
      if (this.model) { body.model = this.model; }
      try {
        const r = await api("POST", "/api/semantic-try", body);
        const lines = [];
        r.data.forEach((res) => {
          lines.push(res.route + " → " + res.model + (res.matched ? " (target " + res.target + ", score " + res.score.toFixed(3) + ")"
            : " (no match: default; best score " + res.score.toFixed(3) + ")"));
          res.scores.forEach((s) => {
            lines.push("    " + s.target + " → " + s.model + ": " + s.score.toFixed(3) + (s.passes ? " ≥ " : " < ") + "threshold " + s.threshold);
          });
        });
        this.text = lines.length ? lines.join("\n") : "No semantic routes.";
      } catch (e) { this.text = ""; this.error = e.message; }
    },
  }));

  // semroute: one semantic route's card; the edit form's fields are read from the DOM.
  Alpine.data("semroute", () => ({
    open: false, error: "",
    toggle() { this.open = !this.open; this.error = ""; },
    route() { return JSON.parse(this.$root.dataset.route); },
    async save() {
      const r = this.route();
      const form = this.$root.querySelector("form");
      const targets = r.targets.map((t) => {
        const ta = Array.from(form.querySelectorAll("textarea[data-target]")).find((x) => x.dataset.target === t.name);
        const th = Array.from(form.querySelectorAll("input[data-threshold]")).find((x) => x.dataset.threshold === t.name);
        return {
          name: t.name, model: t.model, threshold: th ? Number(th.value) : t.threshold,
          utterances: ta ? ta.value.split("\n").map((x) => x.trim()).filter((x) => x !== "") : t.utterances,
        };
      });
      this.error = "";
      try {
        await api("PUT", "/api/semantic-routes/" + encodeURIComponent(r.model), { default: r.default, top_k: r.top_k, targets });
        reload();
      } catch (e) { this.error = e.message; }
    },
    async remove() {
      const r = this.route();
      if (!window.confirm("Delete the semantic route " + r.model + "? Its requests then go to deployments of that name, if any.")) { return; }
      try { await api("DELETE", "/api/semantic-routes/" + encodeURIComponent(r.model)); reload(); } catch (e) { this.error = e.message; }
    },
  }));

  Alpine.data("cache", () => ({
    prefix: "", result: "",
    async purge(body, question) {
      if (!window.confirm(question)) { return; }
      this.error = "";
      try {
        const r = await api("POST", "/api/cache/purge", body);
        this.result = "Purged " + r.deleted + " entries.";
        window.setTimeout(reload, 800);
      } catch (e) { this.result = e.message; }
    },
    purgeAll() { return this.purge({ all: true }, "Purge the whole response cache? Every request misses until it fills again."); },
    purgeModel() {
      const m = this.$el.dataset.model;
      return this.purge({ model: m }, "Purge every cached answer of " + m + "?");
    },
    purgePrefix() {
      const p = this.prefix.trim();
      return this.purge({ key_prefix: p }, "Purge the entries whose key starts with " + p + "?");
    },
  }));

  Alpine.data("prices", () => ({
    open: false, editing: false, error: "", result: "",
    form: { model: "", input: "", output: "" },
    add() { this.form = { model: "", input: "", output: "" }; this.editing = false; this.error = ""; this.open = true; },
    edit() {
      const d = this.$el.closest("tr").dataset;
      this.form = { model: d.model, input: d.input, output: d.output };
      this.editing = true; this.error = ""; this.open = true;
      window.scrollTo(0, 0);
    },
    cancel() { this.open = false; },
    async save() {
      this.error = "";
      try {
        await api("PUT", "/api/prices/" + encodeURIComponent(this.form.model.trim()),
          { input_per_mtok: numOrNull(this.form.input), output_per_mtok: numOrNull(this.form.output) });
        reload();
      } catch (e) { this.error = e.message; }
    },
    async remove() {
      const m = this.$el.closest("tr").dataset.model;
      if (!window.confirm("Remove the stored price of " + m + "? Its built-in price, if any, applies again.")) { return; }
      try { await api("DELETE", "/api/prices/" + encodeURIComponent(m)); reload(); } catch (e) { this.result = e.message; }
    },
  }));

  Alpine.data("users", () => ({
    open: false, error: "", token: "",
    form: { username: "", role: "user", password: "" },
    // The limits and models card: limits shared by all the user's keys, and the model
    // allow-list every key of the user is also bound by.
    limitsOpen: false, limitsID: 0, limitsName: "", models: "",
    lim: { rpm: "", tpm: "", max_parallel: "", budget_usd: "", budget_tokens: "", budget_period: "total" },
    editLimits() {
      const u = JSON.parse(this.$el.closest("tr").dataset.user);
      const l = u.limits;
      this.lim = {
        rpm: l.rpm || "", tpm: l.tpm || "", max_parallel: l.max_parallel || "", budget_usd: l.budget_usd || "",
        budget_tokens: l.budget_tokens || "", budget_period: l.budget_period || "total",
      };
      this.models = u.models.join(", ");
      this.limitsID = u.id; this.limitsName = u.username; this.error = ""; this.open = false; this.limitsOpen = true;
      window.scrollTo(0, 0);
    },
    cancelLimits() { this.limitsOpen = false; },
    async saveLimits() {
      this.error = "";
      try {
        await api("PUT", "/api/users/" + this.limitsID, { limits: limitsBody(this.lim), models: splitList(this.models) });
        reload();
      } catch (e) { this.error = e.message; }
    },
    add() { this.open = true; this.error = ""; },
    cancel() { this.open = false; },
    async create() {
      try { await api("POST", "/api/users", this.form); reload(); } catch (e) { this.error = e.message; }
    },
    async update(body) {
      try { await api("PUT", "/api/users/" + this.$el.dataset.id, body); reload(); } catch (e) { this.error = e.message; }
    },
    toggleRole() { return this.update({ role: this.$el.dataset.role === "admin" ? "user" : "admin" }); },
    toggleDisabled() { return this.update({ disabled: this.$el.dataset.disabled !== "true" }); },
    resetPassword() {
      const pw = window.prompt("New password (at least 12 characters; the user must change it at next sign-in):");
      if (pw) { return this.update({ password: pw }); }
      return null;
    },
    async remove() {
      if (!window.confirm("Delete the user " + this.$el.dataset.name + "? Their keys are revoked.")) { return; }
      try { await api("DELETE", "/api/users/" + this.$el.dataset.id); reload(); } catch (e) { this.error = e.message; }
    },
    async createToken() {
      const name = window.prompt("Name of the new admin API token:");
      if (!name) { return; }
      try { const r = await api("POST", "/api/tokens", { name }); this.token = r.token; } catch (e) { this.error = e.message; }
    },
    async copyToken() { await copyText(this.token); },
    async deleteToken() {
      try { await api("DELETE", "/api/tokens/" + this.$el.dataset.id); reload(); } catch (e) { this.error = e.message; }
    },
  }));

  Alpine.data("clearLogs", () => ({
    async clear() {
      if (!window.confirm("Delete request logs older than 30 days? Statistics are kept.")) { return; }
      const to = Date.now() - 30 * 24 * 3600 * 1000;
      try { const r = await api("DELETE", "/api/logs?to=" + to); window.alert("Deleted " + r.deleted + " rows."); reload(); }
      catch (e) { window.alert(e.message); }
    },
  }));

  Alpine.data("setting", () => ({
    error: "", saved: false,
    async put(value) {
      this.error = ""; this.saved = false;
      const settings = {};
      settings[this.$root.dataset.name] = value;
      try { await api("PUT", "/api/settings", { settings }); this.saved = true; if (value === null) { reload(); } }
      catch (e) { this.error = e.message; }
    },
    save() { return this.put(this.$refs.input.value); },
    reset() { return this.put(null); },
  }));

  Alpine.data("dashboard", () => ({
    stats: null,
    init() {
      const el = document.getElementById("stats-data");
      this.stats = el ? JSON.parse(el.textContent) : null;
      drawCharts(this.stats);
      // Refresh the numbers and charts every 10 s without reloading the page.
      this.timer = window.setInterval(() => this.refresh(), 10000);
    },
    destroy() { window.clearInterval(this.timer); },
    async refresh() {
      try {
        this.stats = await api("GET", "/api/stats?range=" + encodeURIComponent(this.$root.dataset.range));
        drawCharts(this.stats);
      } catch (e) { /* keep the last numbers */ }
    },
    get totals() { return this.stats ? this.stats.totals : { requests: 0 }; },
    get rps() { return fmt(this.totals.requests_per_second); },
    get p50() { return fmt(this.totals.p50_ms); },
    get p95() { return fmt(this.totals.p95_ms); },
    get errorRate() { return (100 * (this.totals.error_rate || 0)).toFixed(1) + "%"; },
    get tokens() { return (this.totals.prompt_tokens || 0) + " + " + (this.totals.completion_tokens || 0); },
  }));
});

function fmt(x) {
  x = Number(x || 0);
  return x >= 100 ? x.toFixed(0) : x.toFixed(2);
}

const charts = {};

// drawCharts (re)draws every [data-chart] element from the stats answer.
function drawCharts(stats) {
  if (!stats || typeof window.uPlot !== "function") { return; }
  const t = stats.series.map((p) => p.t);
  const defs = {
    rps: { series: [{ label: "req/s", stroke: "#2563eb", fill: "rgba(37,99,235,0.12)" }], data: [stats.series.map((p) => p.requests_per_second)] },
    latency: {
      series: [{ label: "p50 ms", stroke: "#16a34a" }, { label: "p95 ms", stroke: "#ea580c" }],
      data: [stats.series.map((p) => p.p50_ms), stats.series.map((p) => p.p95_ms)],
    },
    errors: { series: [{ label: "error %", stroke: "#dc2626", fill: "rgba(220,38,38,0.1)" }], data: [stats.series.map((p) => 100 * p.error_rate)] },
    tokens: {
      series: [{ label: "prompt", stroke: "#7c3aed" }, { label: "completion", stroke: "#0891b2" }],
      data: [stats.series.map((p) => p.prompt_tokens), stats.series.map((p) => p.completion_tokens)],
    },
  };
  document.querySelectorAll("[data-chart]").forEach((el) => {
    const def = defs[el.dataset.chart];
    if (!def) { return; }
    const width = Math.max(260, el.clientWidth);
    const opts = {
      width, height: 200,
      series: [{}].concat(def.series.map((s) => Object.assign({ width: 2, points: { show: false } }, s))),
      axes: [{}, { size: 50 }],
      legend: { show: true },
    };
    const data = [t].concat(def.data);
    if (charts[el.dataset.chart]) { charts[el.dataset.chart].destroy(); }
    charts[el.dataset.chart] = new window.uPlot(opts, data, el);
  });
}

let resizeTimer = 0;
window.addEventListener("resize", () => {
  window.clearTimeout(resizeTimer);
  resizeTimer = window.setTimeout(() => {
    Object.keys(charts).forEach((k) => {
      const el = document.querySelector('[data-chart="' + k + '"]');
      if (el) { charts[k].setSize({ width: Math.max(260, el.clientWidth), height: 200 }); }
    });
  }, 150);
});
