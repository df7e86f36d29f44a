// ctflow's dashboard: a single page over the MLflow REST API (/ajax-api/2.0/mlflow) and
// ctflow's own API (/api/ctflow/v1). Hash routes match the links the mlflow client prints
// (#/experiments/<id>, #/experiments/<id>/runs/<run>). Every value from the server is put
// into the page as text, never as HTML. Charts are uPlot (vendored, see vendor/).
"use strict";

const MLFLOW = "/ajax-api/2.0/mlflow";
const CTFLOW = "/api/ctflow/v1";
const app = document.getElementById("app");

// ---- small helpers -------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "className") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Sent with every call: on a server with --auth its 401s then come without the browser's
// Basic prompt (this page asks instead), and it lets the session cookie sign writes.
const DASHBOARD_HEADER = { "X-Ctflow-Dashboard": "1" };

// A call the server refused for want of a signed-in user.
class SignInNeeded extends Error {}

async function api(path, options) {
  const init = options ? { method: options.method || "POST", headers: { "Content-Type": "application/json", ...DASHBOARD_HEADER },
    body: JSON.stringify(options.body || {}) } : { headers: DASHBOARD_HEADER };
  const response = await fetch(path, init);
  const text = await response.text();
  let body = {};
  try { body = text ? JSON.parse(text) : {}; } catch (_) { body = { message: text }; }
  if (response.status === 401) throw new SignInNeeded(body.message || "Sign in to continue.");
  if (!response.ok) throw new Error(body.message || `${response.status} ${response.statusText}`);
  return body;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  return q.toString();
}

// Every time on the dashboard is UTC and says so, as the CLI prints them.
const TIME_ZONE_LABEL = "UTC";

function when(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  return `${d.toISOString().replace("T", " ").slice(0, 19)} ${TIME_ZONE_LABEL}`;
}

function duration(start, end) {
  if (!start || !end) return "";
  let s = Math.round((Number(end) - Number(start)) / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60); s %= 60;
  if (m < 60) return `${m}m ${s}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

function number(v) {
  if (v === undefined || v === null || v === "") return "";
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return Math.abs(n) >= 1e5 || (Math.abs(n) < 1e-3 && n !== 0) ? n.toExponential(4) : String(Number(n.toPrecision(6)));
}

function tagMap(tags) {
  const out = {};
  for (const t of tags || []) out[t.key] = t.value;
  return out;
}

function badge(text) { return h("span", { className: `badge ${text}` }, text); }

// Puts `nodes` on the page; nested lists are flattened and null, undefined and false left
// out (replaceChildren itself would print them as text).
function show(...nodes) {
  app.replaceChildren(...nodes.flat(Infinity).filter(n => n !== null && n !== undefined && n !== false));
}

function showError(error) { show(h("p", { className: "error", role: "alert" }, String(error.message || error))); }

function setSection(name) {
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.section === name);
}

// A line chart of series over steps: x values shared, one y array per series.
function lineChart(title, xs, series, width) {
  const box = h("div", { className: "card chart", "data-chart": title });
  box.append(h("div", {}, h("strong", {}, title)));
  const holder = h("div");
  box.append(holder);
  const opts = {
    width: width || 440, height: 220,
    scales: { x: { time: false } },
    axes: [{ label: "step" }, {}],
    series: [{ label: "step" }, ...series.map((s, i) => ({ label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true }))],
  };
  // uPlot measures its container: draw once it is in the page.
  requestAnimationFrame(() => new uPlot(opts, [xs, ...series.map(s => s.values)], holder));
  return box;
}

const PALETTE = ["#1463d6", "#d6336c", "#2b8a3e", "#e67700", "#7048e8", "#0b7285", "#5c940d", "#862e9c"];

async function metricHistory(runId, key) {
  const points = [];
  let token = "";
  do {
    const page = await api(`${MLFLOW}/metrics/get-history?${query({ run_id: runId, metric_key: key, max_results: 25000, page_token: token })}`);
    points.push(...(page.metrics || []));
    token = page.next_page_token || "";
  } while (token);
  return points;
}

// Series of several runs on one x axis (the union of their steps).
function alignSeries(histories) {
  const steps = [...new Set(histories.flatMap(h => h.points.map(p => Number(p.step || 0))))].sort((a, b) => a - b);
  const series = histories.map(hist => {
    const byStep = new Map(hist.points.map(p => [Number(p.step || 0), Number(p.value)]));
    return { label: hist.label, values: steps.map(s => (byStep.has(s) ? byStep.get(s) : null)) };
  });
  return { steps, series };
}

// ---- experiments ------------------------------------------------------------------------

async function experimentsPage() {
  setSection("experiments");
  const search = h("input", { type: "search", placeholder: "Filter experiments by name", "aria-label": "Filter experiments" });
  const list = h("div");
  const load = async () => {
    const filter = search.value.trim() ? `name LIKE '%${search.value.trim().replace(/'/g, "")}%'` : "";
    const body = await api(`${MLFLOW}/experiments/search`, { body: { max_results: 1000, filter, order_by: ["last_update_time DESC"] } });
    const rows = (body.experiments || []).map(e => h("tr", {},
      h("td", {}, h("a", { href: `#/experiments/${e.experiment_id}` }, e.name)),
      h("td", {}, e.experiment_id),
      h("td", { className: "num runs", "data-experiment": e.experiment_id }, "…"),
      h("td", {}, when(e.creation_time)),
      h("td", {}, when(e.last_update_time))));
    list.replaceChildren(h("table", { id: "experiments" },
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "ID"), h("th", {}, "Runs"), h("th", {}, "Created"), h("th", {}, "Last update"))),
      h("tbody", {}, rows)));
    const counts = (await api(`${CTFLOW}/experiments/run-counts`)).counts || {};
    for (const cell of list.querySelectorAll("td.runs")) cell.textContent = String(counts[cell.dataset.experiment] || 0);
  };
  search.addEventListener("input", () => load().catch(showError));
  show(h("h1", {}, "Experiments"), h("div", { className: "toolbar" }, search), list);
  await load();
}

// ---- runs table ---------------------------------------------------------------------------

// The runs table's filter, order and columns live in the page's address
// (#/experiments/<id>?filter=...&order=metrics:accuracy:desc&columns=[...]), so a view can
// be shared; the columns chosen last are also remembered per experiment.
const runsState = { experiment: null, tokens: [""], page: 0, selected: new Set(), expanded: new Set() };

function orderClause(column) {
  if (column.kind === "attr") return `attributes.${column.key}`;
  return `${column.kind}.\`${column.key}\``;
}

function columnChoices(experimentId, params) {
  const fromUrl = params.get("columns");
  if (fromUrl) { try { return JSON.parse(fromUrl); } catch (_) { /* the remembered ones */ } }
  try { return JSON.parse(localStorage.getItem(`ctflow.columns.${experimentId}`) || "{}"); } catch (_) { return {}; }
}

function runsAddress(experimentId, view) {
  const q = new URLSearchParams();
  if (view.filter) q.set("filter", view.filter);
  if (view.order) q.set("order", `${view.order.kind}:${view.order.desc ? "desc" : "asc"}:${view.order.key}`);
  if (Object.keys(view.columns).length) q.set("columns", JSON.stringify(view.columns));
  if (view.chart) q.set("chart", view.chart);
  const text = q.toString();
  return `#/experiments/${experimentId}${text ? `?${text}` : ""}`;
}

function parseOrder(text) {
  const found = /^(attr|metrics|params|tags):(asc|desc):(.+)$/s.exec(text || "");
  return found ? { kind: found[1], desc: found[2] === "desc", key: found[3] } : null;
}

// Nested runs under their parents (collapsed until opened), in the order the page came.
function runTree(runs) {
  const ids = new Set(runs.map(r => r.info.run_id));
  const parentOf = r => { const p = tagMap(r.data.tags)["mlflow.parentRunId"]; return p && ids.has(p) && p !== r.info.run_id ? p : null; };
  const children = new Map();
  for (const r of runs) {
    const parent = parentOf(r);
    if (parent) { if (!children.has(parent)) children.set(parent, []); children.get(parent).push(r); }
  }
  const out = [];
  const visit = (r, depth, seen) => {
    if (seen.has(r.info.run_id)) return;
    seen.add(r.info.run_id);
    const kids = children.get(r.info.run_id) || [];
    out.push({ run: r, depth, children: kids.length });
    if (runsState.expanded.has(r.info.run_id)) for (const k of kids) visit(k, depth + 1, seen);
  };
  const seen = new Set();
  for (const r of runs) if (!parentOf(r)) visit(r, 0, seen);
  return out;
}

async function runsPage(experimentId, params) {
  setSection("experiments");
  if (runsState.experiment !== experimentId) Object.assign(runsState, { experiment: experimentId, tokens: [""], page: 0, selected: new Set(), expanded: new Set() });
  const view = { filter: params.get("filter") || "", order: parseOrder(params.get("order")), columns: columnChoices(experimentId, params), chart: params.get("chart") || "" };
  // Page tokens belong to one filter and order: another view starts at its first page.
  const firstPage = () => Object.assign(runsState, { searched: JSON.stringify([view.filter, view.order]), tokens: [""], page: 0 });
  if (runsState.searched !== JSON.stringify([view.filter, view.order])) firstPage();
  const experiment = (await api(`${MLFLOW}/experiments/get?${query({ experiment_id: experimentId })}`)).experiment;
  const filter = h("input", { type: "search", value: view.filter, placeholder: "metrics.accuracy > 0.9 and params.C = '0.5'", "aria-label": "Filter runs" });
  const table = h("div", { className: "scroll" });
  const chartBox = h("div", { id: "runs-chart" });
  const pager = h("div", { className: "toolbar" });
  const compare = h("button", { className: "primary", id: "compare", disabled: true }, "Compare");
  const chooser = h("details", { className: "columns" }, h("summary", {}, "Columns"));
  const chartPicker = h("select", { "aria-label": "Chart a metric across runs", id: "chart-metric" });
  const keepAddress = () => history.replaceState(null, "", runsAddress(experimentId, view));
  compare.addEventListener("click", () => { location.hash = `#/compare?runs=${[...runsState.selected].join(",")}`; });
  const reload = () => load().catch(err => table.replaceChildren(h("p", { className: "error", role: "alert" }, err.message)));
  filter.addEventListener("keydown", e => {
    if (e.key !== "Enter") return;
    view.filter = filter.value.trim(); firstPage();
    keepAddress(); reload();
  });
  chartPicker.addEventListener("change", () => { view.chart = chartPicker.value; keepAddress(); reload(); });

  const load = async () => {
    const request = { experiment_ids: [experimentId], filter: view.filter };
    const [body, counted] = await Promise.all([
      api(`${MLFLOW}/runs/search`, { body: { ...request, max_results: 100,
        order_by: view.order ? [`${orderClause(view.order)} ${view.order.desc ? "DESC" : "ASC"}`] : ["attributes.start_time DESC"],
        page_token: runsState.tokens[runsState.page] } }),
      api(`${CTFLOW}/runs/count`, { body: request })]);
    const runs = body.runs || [];
    if (body.next_page_token) runsState.tokens[runsState.page + 1] = body.next_page_token;
    const runIds = runs.map(r => `'${r.info.run_id}'`);
    const versions = runIds.length
      ? ((await api(`${MLFLOW}/model-versions/search?${query({ filter: `run_id IN (${runIds.join(",")})`, max_results: 1000 })}`).catch(() => ({}))).model_versions || [])
      : [];
    const versionsOf = new Map();
    for (const v of versions) { if (!versionsOf.has(v.run_id)) versionsOf.set(v.run_id, []); versionsOf.get(v.run_id).push(v); }
    const metricKeys = [...new Set(runs.flatMap(r => (r.data.metrics || []).map(m => m.key)))].sort();
    const paramKeys = [...new Set(runs.flatMap(r => (r.data.params || []).map(p => p.key)))].sort();
    const tagKeys = [...new Set(runs.flatMap(r => (r.data.tags || []).map(t => t.key)))]
      .filter(k => !k.startsWith("mlflow.log-model") && k !== "mlflow.runName" && k !== "mlflow.note.content").sort();
    const defaultTags = new Set(["mlflow.source.name", "mlflow.user"]);
    const columns = [
      { group: "Run", kind: "attr", key: "run_name", label: "Run Name" },
      { group: "Run", kind: "attr", key: "status", label: "Status" },
      { group: "Run", kind: "attr", key: "start_time", label: "Created" },
      { group: "Run", kind: "duration", key: "duration", label: "Duration" },
      { group: "Run", kind: "datasets", key: "datasets", label: "Dataset" },
      { group: "Run", kind: "models", key: "models", label: "Models" },
      ...metricKeys.map(k => ({ group: "Metrics", kind: "metrics", key: k, label: k })),
      ...paramKeys.map(k => ({ group: "Parameters", kind: "params", key: k, label: k })),
      ...tagKeys.map(k => ({ group: "Tags", kind: "tags", key: k, label: k === "mlflow.source.name" ? "Source" : k === "mlflow.user" ? "User" : k, hidden: !defaultTags.has(k) })),
    ];
    const isShown = c => { const id = `${c.kind}:${c.key}`; return id in view.columns ? view.columns[id] : !c.hidden; };
    chooser.replaceChildren(h("summary", {}, "Columns"), h("div", {}, ["Run", "Metrics", "Parameters", "Tags"].map(group => {
      const members = columns.filter(c => c.group === group);
      if (!members.length) return null;
      return h("fieldset", {}, h("legend", {}, group), members.map(c => {
        const id = `${c.kind}:${c.key}`;
        const box = h("input", { type: "checkbox", checked: isShown(c), "data-column": id });
        box.addEventListener("change", () => {
          view.columns[id] = box.checked;
          localStorage.setItem(`ctflow.columns.${experimentId}`, JSON.stringify(view.columns));
          keepAddress(); reload();
        });
        return h("label", { style: "display:block" }, box, ` ${c.label}`);
      }));
    })));
    const shown = columns.filter(isShown);
    const groups = [];
    for (const c of shown) {
      if (groups.length && groups[groups.length - 1].name === c.group) groups[groups.length - 1].span += 1;
      else groups.push({ name: c.group, span: 1 });
    }
    const groupRow = h("tr", { className: "groups" }, h("th", {}, ""), groups.map(g => h("th", { colspan: String(g.span), "data-group": g.name }, g.name === "Run" ? "" : g.name)));
    const header = h("tr", {}, h("th", {}, ""), shown.map(c => {
      const sortable = !["duration", "models", "datasets"].includes(c.kind);
      const sorted = view.order && view.order.kind === c.kind && view.order.key === c.key;
      const th = h("th", { className: `${sortable ? "sortable" : ""} ${sorted ? (view.order.desc ? "sorted-desc" : "sorted-asc") : ""}`,
        "data-column": `${c.kind}:${c.key}` }, c.label);
      if (sortable) th.addEventListener("click", () => {
        view.order = { kind: c.kind, key: c.key, desc: sorted ? !view.order.desc : true };
        firstPage();
        keepAddress(); reload();
      });
      return th;
    }));
    const rows = runTree(runs).map(({ run: r, depth, children }) => {
      const tags = tagMap(r.data.tags);
      const metrics = Object.fromEntries((r.data.metrics || []).map(m => [m.key, m.value]));
      const params = Object.fromEntries((r.data.params || []).map(p => [p.key, p.value]));
      const box = h("input", { type: "checkbox", "aria-label": `select ${r.info.run_name}`, checked: runsState.selected.has(r.info.run_id) });
      box.addEventListener("change", () => {
        box.checked ? runsState.selected.add(r.info.run_id) : runsState.selected.delete(r.info.run_id);
        compare.disabled = runsState.selected.size < 2;
      });
      const nameCell = () => {
        const open = runsState.expanded.has(r.info.run_id);
        const toggle = children ? h("button", { className: "expander", "aria-label": `${open ? "hide" : "show"} the ${children} child runs of ${r.info.run_name}`, "aria-expanded": String(open) }, open ? "▾" : "▸") : null;
        if (toggle) toggle.addEventListener("click", () => { open ? runsState.expanded.delete(r.info.run_id) : runsState.expanded.add(r.info.run_id); reload(); });
        return h("td", { style: `padding-left:${8 + 18 * depth}px` }, toggle, " ", h("a", { href: `#/experiments/${experimentId}/runs/${r.info.run_id}` }, r.info.run_name || r.info.run_id),
          children ? h("span", { className: "muted" }, ` (${children})`) : null);
      };
      const cell = c => {
        switch (c.kind) {
          case "attr":
            if (c.key === "run_name") return nameCell();
            if (c.key === "status") return h("td", {}, badge(r.info.status));
            return h("td", {}, when(r.info.start_time));
          case "duration": return h("td", {}, duration(r.info.start_time, r.info.end_time));
          case "datasets": return h("td", {}, ((r.inputs && r.inputs.dataset_inputs) || []).map(d => `${d.dataset.name} (${d.dataset.digest})`).join(", "));
          case "tags": return h("td", {}, tags[c.key] || "");
          case "metrics": return h("td", { className: "num" }, number(metrics[c.key]));
          case "params": return h("td", {}, params[c.key] ?? "");
          default: {
            const registered = versionsOf.get(r.info.run_id) || [];
            if (registered.length) return h("td", {}, registered.flatMap((v, i) => [i ? ", " : "", h("a", { href: `#/models/${encodeURIComponent(v.name)}/versions/${v.version}` }, `${v.name} v${v.version}`)]));
            return h("td", {}, ((r.outputs && r.outputs.model_outputs) || []).flatMap((m, i) => [i ? ", " : "", h("a", { href: `#/logged-models/${m.model_id}` }, m.model_id)]));
          }
        }
      };
      return h("tr", { "data-run": r.info.run_id, "data-depth": String(depth) }, h("td", {}, box), shown.map(cell));
    });
    table.replaceChildren(h("table", { id: "runs" }, h("thead", {}, groupRow, header), h("tbody", {}, rows)));
    compare.disabled = runsState.selected.size < 2;
    chartPicker.replaceChildren(h("option", { value: "" }, "no chart"), ...metricKeys.map(k => h("option", { value: k, selected: k === view.chart }, k)));
    chartBox.replaceChildren(view.chart && metricKeys.includes(view.chart) ? runsBarChart(runs, view.chart) : "");
    const prev = h("button", { disabled: runsState.page === 0 }, "Previous");
    const next = h("button", { disabled: !body.next_page_token, id: "next-page" }, "Next");
    prev.addEventListener("click", () => { runsState.page -= 1; reload(); });
    next.addEventListener("click", () => { runsState.page += 1; reload(); });
    const first = runsState.page * 100;
    const total = counted.count || 0;
    pager.replaceChildren(prev, h("span", { className: "muted", id: "runs-count" },
      runs.length ? `runs ${first + 1}-${first + runs.length} of ${total}${view.filter ? " matching the filter" : ""}` : `0 of ${total} runs`), next);
  };
  show(h("h1", {}, experiment.name), h("div", { className: "toolbar" }, filter, chooser, compare, h("label", {}, "chart ", chartPicker)), chartBox, table, pager);
  await load();
}

// One metric across the runs on the page: a bar per run, named by the run.
function runsBarChart(runs, key) {
  const points = runs.map(r => ({ name: r.info.run_name || r.info.run_id.slice(0, 8), value: ((r.data.metrics || []).find(m => m.key === key) || {}).value }))
    .filter(p => p.value !== undefined && Number.isFinite(Number(p.value)));
  if (!points.length) return h("p", { className: "muted" }, `no run on this page has ${key}`);
  const holder = h("div", { className: "card chart", "data-chart": `runs:${key}` }, h("strong", {}, `${key} by run`));
  const xs = points.map((_, i) => i);
  const opts = {
    width: Math.min(Math.max(440, 40 * points.length), availableWidth()), height: 260,
    scales: { x: { time: false, range: [-0.5, points.length - 0.5] } },
    axes: [{ values: (u, ticks) => ticks.map(t => (Number.isInteger(t) && points[t] ? points[t].name : "")), splits: () => xs, rotate: -35,
      size: 20 + 6 * Math.min(24, Math.max(...points.map(p => p.name.length))) }, { label: key }],
    series: [{ label: "run" }, { label: key, stroke: PALETTE[0], fill: "rgba(20,99,214,0.25)", paths: uPlot.paths.bars({ size: [0.6, 40] }) }],
  };
  requestAnimationFrame(() => new uPlot(opts, [xs, points.map(p => Number(p.value))], holder));
  return holder;
}

// ---- one run ------------------------------------------------------------------------------

function artifactUrl(run, path) { return artifactUrlAt(run.info.artifact_uri, path); }

// The proxied download URL of `path` under an artifact URI; null when the artifacts are
// not served through this server (an s3:// location the browser cannot read).
function artifactUrlAt(uri, path) {
  uri = uri || "";
  if (uri.startsWith("mlflow-artifacts:/")) {
    const rest = uri.slice("mlflow-artifacts:/".length).replace(/^\/+/, "").replace(/\/+$/, "");
    return `/api/2.0/mlflow-artifacts/artifacts/${rest}/${path.split("/").map(encodeURIComponent).join("/")}`;
  }
  return null;
}

// The artifact tree: folders open and close, the previewed file is highlighted, and each
// file and folder has a download button (a folder downloads as a zip of its files).
async function artifactTree(run, path, preview, listed) {
  const body = listed || await api(`${MLFLOW}/artifacts/list?${query({ run_id: run.info.run_id, path })}`);
  const list = h("ul", { className: "tree" });
  for (const f of body.files || []) {
    const name = f.path.split("/").pop();
    const label = h("span", { className: "name" }, f.is_dir ? `▸ ${name}/` : name);
    const download = f.is_dir
      ? h("button", { className: "download", title: `Download ${name}/ as a zip`, "aria-label": `download ${f.path}` }, "⤓")
      : h("a", { className: "download", href: artifactUrl(run, f.path) || undefined, download: name, title: `Download ${name}`, "aria-label": `download ${f.path}` }, "⤓");
    const item = h("li", { "data-path": f.path, className: f.is_dir ? "dir" : "file" },
      h("div", { className: "row" }, label, f.is_dir ? "" : h("span", { className: "muted" }, ` ${f.file_size || 0} B`), download));
    download.addEventListener("click", async e => {
      e.stopPropagation();
      if (!f.is_dir) return;
      download.disabled = true;
      try { await downloadFolder(run, f.path); } catch (error) { showError(error); } finally { download.disabled = false; }
    });
    item.firstChild.addEventListener("click", async e => {
      e.stopPropagation();
      if (f.is_dir) {
        const open = item.querySelector("ul");
        if (open) { open.remove(); label.textContent = `▸ ${name}/`; item.classList.remove("open"); }
        else { item.append(await artifactTree(run, f.path, preview)); label.textContent = `▾ ${name}/`; item.classList.add("open"); }
      } else {
        for (const el of document.querySelectorAll("#artifacts li.selected")) el.classList.remove("selected");
        item.classList.add("selected");
        preview(f.path);
      }
    });
    list.append(item);
  }
  return list;
}

// Every file below `path`, listed depth first.
async function artifactFiles(run, path) {
  const body = await api(`${MLFLOW}/artifacts/list?${query({ run_id: run.info.run_id, path })}`);
  const out = [];
  for (const f of body.files || []) {
    if (f.is_dir) out.push(...await artifactFiles(run, f.path));
    else out.push(f.path);
  }
  return out;
}

async function downloadFolder(run, path) {
  const files = await artifactFiles(run, path);
  const prefix = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
  const entries = [];
  for (const file of files) {
    const url = artifactUrl(run, file);
    if (!url) throw new Error(`The artifacts live at ${run.info.artifact_uri}; ctflow downloads proxied artifacts only.`);
    const response = await fetch(url, { headers: DASHBOARD_HEADER });
    if (!response.ok) throw new Error(`${file}: ${response.status} ${response.statusText}`);
    entries.push({ name: file.slice(prefix.length), data: new Uint8Array(await response.arrayBuffer()) });
  }
  const blob = zipStored(entries);
  const link = h("a", { href: URL.createObjectURL(blob), download: `${path.split("/").pop()}.zip` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

// A zip archive of `entries` ({name, data: Uint8Array}) without compression: artifacts are
// mostly compressed already (pickles, parquet, images), and storing keeps this small.
function zipStored(entries) {
  const encoder = new TextEncoder();
  const parts = [];
  const central = [];
  let offset = 0;
  for (const entry of entries) {
    const name = encoder.encode(entry.name);
    const crc = crc32(entry.data);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true); local.setUint16(4, 20, true); local.setUint16(6, 0x0800, true);
    local.setUint32(14, crc, true); local.setUint32(18, entry.data.length, true); local.setUint32(22, entry.data.length, true);
    local.setUint16(26, name.length, true);
    parts.push(local, name, entry.data);
    const header = new DataView(new ArrayBuffer(46));
    header.setUint32(0, 0x02014b50, true); header.setUint16(4, 20, true); header.setUint16(6, 20, true); header.setUint16(8, 0x0800, true);
    header.setUint32(16, crc, true); header.setUint32(20, entry.data.length, true); header.setUint32(24, entry.data.length, true);
    header.setUint16(28, name.length, true); header.setUint32(42, offset, true);
    central.push(header, name);
    offset += 30 + name.length + entry.data.length;
  }
  const centralSize = central.reduce((n, p) => n + p.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); end.setUint16(8, entries.length, true); end.setUint16(10, entries.length, true);
  end.setUint32(12, centralSize, true); end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// HTML artifacts render in a sandboxed frame from their text (srcdoc, no allow-scripts):
// the server sends them as attachments, and a report's script must never run with the
// dashboard's origin.
async function previewArtifact(run, path, into) {
  const url = artifactUrl(run, path);
  if (!url) { into.replaceChildren(h("p", { className: "muted" }, `The artifacts live at ${run.info.artifact_uri}; ctflow previews proxied artifacts only.`)); return; }
  const lower = path.toLowerCase();
  const heading = h("div", { className: "toolbar" }, h("strong", {}, path), h("a", { href: url, download: path.split("/").pop(), className: "download" }, "Download"));
  if (/\.(png|jpe?g|gif|svg|webp)$/.test(lower)) { into.replaceChildren(heading, h("img", { src: url, alt: path, style: "max-width:100%" })); return; }
  into.replaceChildren(heading, h("p", { className: "muted loading" }, "Loading…"));
  const response = await fetch(url, { headers: DASHBOARD_HEADER });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${response.statusText}`);
  let text = await response.text();
  if (/\.html?$/.test(lower)) {
    const frame = h("iframe", { className: "report", sandbox: "", title: path, referrerpolicy: "no-referrer" });
    frame.srcdoc = text;
    into.replaceChildren(heading, frame);
    return;
  }
  if (lower.endsWith(".json")) { try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* shown as is */ } }
  into.replaceChildren(heading, h("pre", { className: "preview" }, text.slice(0, 200000)));
}

// Exponential moving average, as MLflow's chart smoothing: weight 0 leaves the series as is.
function smooth(values, weight) {
  if (!weight) return values;
  let last = null;
  return values.map(v => {
    if (v === null || !Number.isFinite(v)) return v;
    last = last === null ? v : last * weight + (1 - weight) * v;
    return last;
  });
}

// A run's metric series under the chosen x axis (step, wall time, seconds since the run
// started), smoothing and scale; every chart shares one hover.
function runMetricChart(key, points, settings, runStart) {
  const sorted = points.slice().sort((a, b) => settings.x === "step"
    ? Number(a.step || 0) - Number(b.step || 0) || Number(a.timestamp) - Number(b.timestamp)
    : Number(a.timestamp) - Number(b.timestamp));
  const xOf = p => settings.x === "step" ? Number(p.step || 0)
    : settings.x === "wall" ? Number(p.timestamp) / 1000 : (Number(p.timestamp) - runStart) / 1000;
  const xs = sorted.map(xOf);
  const raw = sorted.map(p => Number(p.value));
  const positive = raw.every(v => v > 0);
  const box = h("div", { className: "card chart", "data-chart": key });
  box.append(h("div", {}, h("strong", {}, key), h("span", { className: "muted" }, ` latest ${number(raw[raw.length - 1])}`),
    settings.log && !positive ? h("span", { className: "muted" }, " (values ≤ 0: linear scale)") : null));
  const holder = h("div");
  box.append(holder);
  const series = [{ label: settings.x === "step" ? "step" : settings.x === "wall" ? "time" : "seconds" }];
  const data = [xs];
  if (settings.smoothing > 0) {
    series.push({ label: "raw", stroke: "rgba(20,99,214,0.25)", width: 1 });
    data.push(raw);
  }
  series.push({ label: settings.smoothing > 0 ? `smoothed ${settings.smoothing}` : key, stroke: PALETTE[0], width: 1.5, spanGaps: true });
  data.push(smooth(raw, settings.smoothing));
  const opts = {
    width: 440, height: 220,
    cursor: { sync: { key: "run-metrics", setSeries: false } },
    scales: { x: { time: settings.x === "wall" }, y: settings.log && positive ? { distr: 3 } : {} },
    tzDate: ts => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    axes: [{ label: settings.x === "step" ? "step" : settings.x === "wall" ? `time (${TIME_ZONE_LABEL})` : "seconds since start" }, {}],
    series,
  };
  requestAnimationFrame(() => new uPlot(opts, data, holder));
  return box;
}

async function runPage(experimentId, runId) {
  setSection("experiments");
  const run = (await api(`${MLFLOW}/runs/get?${query({ run_id: runId })}`)).run;
  const tags = tagMap(run.data.tags);
  const metrics = run.data.metrics || [];
  const params = run.data.params || [];
  const datasets = (run.inputs && run.inputs.dataset_inputs) || [];
  const parentId = tags["mlflow.parentRunId"];
  const [found, parent, listing, histories] = await Promise.all([
    api(`${MLFLOW}/model-versions/search?${query({ filter: `run_id='${runId}'`, max_results: 200 })}`).catch(() => ({})),
    parentId ? api(`${MLFLOW}/runs/get?${query({ run_id: parentId })}`).then(b => b.run).catch(() => null) : null,
    api(`${MLFLOW}/artifacts/list?${query({ run_id: runId })}`),
    Promise.all(metrics.map(async m => ({ key: m.key, latest: m, points: await metricHistory(runId, m.key) })))]);
  const versions = found.model_versions || [];
  const hasDrift = (listing.files || []).some(f => f.path === "drift_report.json");
  const values = h("div", { id: "metric-values" });
  const charts = h("div", { className: "grid", id: "metric-charts" });
  const preview = h("div", { id: "artifact-preview" }, h("p", { className: "muted" }, "Pick a file to preview it."));
  const tree = h("div", { id: "artifacts" });
  const drift = h("div", { id: "drift-section" });
  const description = tags["mlflow.note.content"];
  show(
    h("div", { className: "muted" }, h("a", { href: `#/experiments/${experimentId}` }, "← runs")),
    h("h1", {}, run.info.run_name || run.info.run_id, " ", badge(run.info.status)),
    description ? h("p", { id: "run-description", className: "description" }, description) : null,
    h("table", { className: "kv card", id: "run-info" }, h("tbody", {},
      h("tr", {}, h("td", {}, "Run ID"), h("td", {}, run.info.run_id)),
      h("tr", {}, h("td", {}, "Created"), h("td", {}, when(run.info.start_time))),
      h("tr", {}, h("td", {}, "Duration"), h("td", {}, duration(run.info.start_time, run.info.end_time))),
      h("tr", {}, h("td", {}, "User"), h("td", {}, tags["mlflow.user"] || "")),
      h("tr", {}, h("td", {}, "Source"), h("td", {}, tags["mlflow.source.name"] || "")),
      parentId ? h("tr", { id: "parent-run" }, h("td", {}, "Parent run"), h("td", {}, h("a", { href: `#/experiments/${parent ? parent.info.experiment_id : experimentId}/runs/${parentId}` }, parent ? parent.info.run_name || parentId : parentId))) : null,
      datasets.length ? h("tr", { id: "run-datasets" }, h("td", {}, "Datasets"), h("td", {}, datasets.map(d => {
        const context = (d.tags || []).find(t => t.key === "mlflow.data.context");
        return h("div", {}, h("strong", {}, d.dataset.name), ` (${d.dataset.digest})`, context ? ` · ${context.value}` : "", d.dataset.source_type ? h("span", { className: "muted" }, ` · ${d.dataset.source_type}`) : null);
      }))) : null,
      versions.length ? h("tr", { id: "run-versions" }, h("td", {}, "Registered models"), h("td", {}, versions.map(v =>
        h("div", {}, h("a", { href: `#/models/${encodeURIComponent(v.name)}/versions/${v.version}` }, `${v.name} v${v.version}`))))) : null,
      tags["ctflow.pipeline_run"] ? h("tr", {}, h("td", {}, "Pipeline run"), h("td", {}, h("a", { href: `#/pipeline-runs/${tags["ctflow.pipeline_run"]}` }, tags["ctflow.pipeline_run"]))) : null)),
    drift,
    h("h2", {}, "Metrics"), values, charts,
    h("h2", {}, "Parameters"), kvTable(params.map(p => [p.key, p.value]), "params"),
    h("h2", {}, "Tags"), kvTable(Object.entries(tags).filter(([k]) => !k.startsWith("mlflow.log-model") && k !== "mlflow.note.content"), "tags"),
    h("h2", {}, "Logged models"), h("div", { id: "logged-models" }, ((run.outputs && run.outputs.model_outputs) || []).length
      ? h("ul", {}, run.outputs.model_outputs.map(m => h("li", {}, h("a", { href: `#/logged-models/${m.model_id}` }, m.model_id), m.step ? ` (step ${m.step})` : "")))
      : h("p", { className: "muted" }, "none")),
    h("h2", {}, "Artifacts"), h("div", { className: "split" }, tree, preview));
  if (hasDrift) await driftSection(run, drift);
  // A metric logged once is a value, not a curve: those go in a table, series get charts.
  const single = histories.filter(x => x.points.length <= 1);
  const series = histories.filter(x => x.points.length > 1);
  if (single.length) {
    values.append(h("table", { id: "metric-table" }, h("thead", {}, h("tr", {}, h("th", {}, "Metric"), h("th", {}, "Value"), h("th", {}, "Step"), h("th", {}, `Logged (${TIME_ZONE_LABEL})`))),
      h("tbody", {}, single.map(x => h("tr", { "data-metric": x.key }, h("td", {}, x.key), h("td", { className: "num" }, number(x.latest.value)),
        h("td", { className: "num" }, String(x.latest.step || 0)), h("td", {}, when(x.latest.timestamp)))))));
  }
  if (series.length) {
    const settings = { x: "step", smoothing: 0, log: false };
    const xAxis = h("select", { "aria-label": "x axis" }, h("option", { value: "step" }, "step"), h("option", { value: "wall" }, "wall time"), h("option", { value: "relative" }, "relative time"));
    const smoothing = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: "0", "aria-label": "smoothing" });
    const log = h("input", { type: "checkbox", "aria-label": "log scale" });
    const draw = () => charts.replaceChildren(...series.map(x => runMetricChart(x.key, x.points, settings, Number(run.info.start_time))));
    xAxis.addEventListener("change", () => { settings.x = xAxis.value; draw(); });
    smoothing.addEventListener("change", () => { settings.smoothing = Number(smoothing.value); draw(); });
    log.addEventListener("change", () => { settings.log = log.checked; draw(); });
    values.append(h("div", { className: "toolbar", id: "chart-controls" }, "x axis ", xAxis, h("label", {}, " smoothing ", smoothing), h("label", {}, log, " log scale")));
    draw();
  }
  if (!metrics.length) values.append(h("p", { className: "muted" }, "no metrics"));
  tree.append(await artifactTree(run, "", path => previewArtifact(run, path, preview)
    .catch(error => preview.replaceChildren(h("p", { className: "error", role: "alert" }, String(error.message || error)))), listing));
}

// A drift check's report (drift_report.json, written by the watcher or `ctflow drift`):
// each column's statistic against its threshold, charted and tabled.
async function driftSection(run, into) {
  const url = artifactUrl(run, "drift_report.json");
  if (!url) return;
  const report = await (await fetch(url)).json();
  const columns = report.columns || [];
  const section = h("div", { id: "drift" });
  into.append(h("h2", {}, "Drift ", badge(report.dataset && report.dataset.drifted ? "drift" : "ok"),
    h("span", { className: "muted" }, ` ${report.dataset ? report.dataset.drifted_columns : 0} of ${columns.length} columns drifted`)), section);
  if (!columns.length) return;
  // Scores as a share of their threshold: at 1 or above a distance drifts; a p-value
  // drifts below 1, so it is shown inverted (threshold / p).
  const ratio = c => (c.p_value !== undefined && c.p_value !== null
    ? (c.p_value > 0 ? c.threshold / c.p_value : 1e6) : (c.threshold > 0 ? c.statistic / c.threshold : 0));
  const xs = columns.map((_, i) => i);
  const chart = h("div", { className: "card", "data-chart": "drift-columns" });
  section.append(chart);
  const opts = {
    width: Math.max(420, Math.min(900, 120 + 60 * columns.length)), height: 240,
    scales: { x: { time: false, range: [-0.5, columns.length - 0.5] }, y: { distr: 3 } },
    // Column names slant so that long ones do not run into each other.
    axes: [{ values: (u, ticks) => ticks.map(t => (Number.isInteger(t) && columns[t] ? columns[t].column : "")), splits: () => xs,
      rotate: -35, size: 20 + 6 * Math.min(24, Math.max(...columns.map(c => c.column.length))) },
      { label: "score / threshold (log)" }],
    series: [{ label: "column" },
      { label: "score / threshold", stroke: PALETTE[0], fill: "rgba(20,99,214,0.25)", paths: uPlot.paths.bars({ size: [0.6, 60] }) },
      { label: "drift line", stroke: PALETTE[1], dash: [6, 4], points: { show: false } }],
  };
  // Clamped to 1/1000..1000 so one extreme p-value does not flatten the other bars.
  const shown = columns.map(c => Math.min(Math.max(ratio(c), 1e-3), 1e3));
  requestAnimationFrame(() => new uPlot(opts, [xs, shown, columns.map(() => 1)], chart));
  section.append(h("table", { id: "drift-columns" }, h("thead", {}, h("tr", {}, ["Column", "Type", "Method", "Statistic", "p-value", "Threshold", "Verdict"].map(t => h("th", {}, t)))),
    h("tbody", {}, columns.map(c => h("tr", { "data-column": c.column }, h("td", {}, c.column), h("td", {}, c.kind), h("td", {}, c.method),
      h("td", { className: "num" }, number(c.statistic)), h("td", { className: "num" }, c.p_value === undefined ? "" : number(c.p_value)),
      h("td", { className: "num" }, number(c.threshold)), h("td", {}, badge(c.drifted ? "drift" : "ok")))))));
}

function kvTable(pairs, id) {
  if (!pairs.length) return h("p", { className: "muted" }, "none");
  return h("table", { className: "kv", id }, h("tbody", {}, pairs.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v)))));
}

// ---- compare -------------------------------------------------------------------------------

// MLflow's compare link carries the run ids as a JSON list (`?runs=["a","b"]`).
function mlflowRunList(text) {
  try {
    const ids = JSON.parse(text || "[]");
    if (Array.isArray(ids)) return ids.map(String).filter(Boolean);
  } catch (_) { /* a plain comma-separated list, as ctflow's own link */ }
  return (text || "").split(",").map(s => s.trim()).filter(Boolean);
}

async function comparePage(ids) {
  if (ids.length < 2) throw new Error("Pick at least two runs to compare.");
  setSection("experiments");
  const runs = await Promise.all(ids.map(id => api(`${MLFLOW}/runs/get?${query({ run_id: id })}`).then(b => b.run)));
  const label = r => r.info.run_name || r.info.run_id.slice(0, 8);
  const metricKeys = [...new Set(runs.flatMap(r => (r.data.metrics || []).map(m => m.key)))].sort();
  const paramKeys = [...new Set(runs.flatMap(r => (r.data.params || []).map(p => p.key)))].sort();
  const value = (r, kind, key) => {
    const found = (r.data[kind] || []).find(x => x.key === key);
    return found ? (kind === "metrics" ? number(found.value) : found.value) : "";
  };
  const diffRows = [...paramKeys.map(k => ["params", k]), ...metricKeys.map(k => ["metrics", k])].map(([kind, key]) => {
    const values = runs.map(r => value(r, kind, key));
    const differs = new Set(values).size > 1;
    return h("tr", { className: differs ? "differs" : "same" }, h("td", {}, `${kind.slice(0, -1)}: ${key}`), values.map(v => h("td", { className: kind === "metrics" ? "num" : "" }, v)));
  });
  const charts = h("div", { className: "grid", id: "compare-charts" });
  const onlyDifferences = h("input", { type: "checkbox", id: "only-differences" });
  onlyDifferences.addEventListener("change", () => {
    for (const row of diffRows) row.hidden = onlyDifferences.checked && row.classList.contains("same");
  });
  show(
    h("h1", {}, `Comparing ${runs.length} runs`),
    h("h2", {}, "Parameters and metrics"),
    h("div", { className: "toolbar" }, h("label", {}, onlyDifferences, " show only differences")),
    h("div", { className: "scroll" }, h("table", { id: "diff" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), runs.map(r => h("th", {}, h("a", { href: `#/experiments/${r.info.experiment_id}/runs/${r.info.run_id}` }, label(r)))))),
      h("tbody", {}, diffRows))),
    h("h2", {}, "Metric curves"), charts,
    h("h2", {}, "Scatter"), scatterPicker(runs, metricKeys, paramKeys),
    h("h2", {}, "Parallel coordinates"), parallelCoordinates(runs, paramKeys, metricKeys));
  for (const key of metricKeys) {
    const histories = await Promise.all(runs.map(async r => ({ label: label(r), points: await metricHistory(r.info.run_id, key) })));
    const { steps, series } = alignSeries(histories);
    charts.append(lineChart(key, steps, series));
  }
}

// The room a wide chart may take: the page's width less its margins.
function availableWidth() { return Math.max(440, app.clientWidth - 48); }

// One point per run: any numeric parameter or metric against another.
function scatterPicker(runs, metricKeys, paramKeys) {
  const options = [...metricKeys.map(k => `metrics:${k}`), ...paramKeys.map(k => `params:${k}`)];
  const xs = h("select", { "aria-label": "x axis" }, options.map(o => h("option", {}, o)));
  const ys = h("select", { "aria-label": "y axis" }, options.map(o => h("option", {}, o)));
  if (options.length > 1) ys.selectedIndex = 1;
  const out = h("div");
  const draw = () => {
    const read = (r, o) => { const [kind, key] = o.split(/:(.*)/s); const f = (r.data[kind] || []).find(x => x.key === key); return f ? Number(f.value) : NaN; };
    // Each run is its own series, so its point has the run's colour and name (legend, hover).
    const points = runs.map((r, i) => ({ run: r, colour: PALETTE[i % PALETTE.length], x: read(r, xs.value), y: read(r, ys.value) }))
      .filter(p => Number.isFinite(p.x) && Number.isFinite(p.y));
    if (!points.length) { out.replaceChildren(h("p", { className: "muted" }, "no numeric values")); return; }
    const holder = h("div", { className: "card chart", "data-chart": "scatter" });
    out.replaceChildren(holder);
    const xValues = [...new Set(points.map(p => p.x))].sort((a, b) => a - b);
    const data = [xValues, ...points.map(p => xValues.map(x => (x === p.x ? p.y : null)))];
    const opts = { width: 440, height: 260, scales: { x: { time: false } }, axes: [{ label: xs.value }, { label: ys.value }],
      series: [{ label: xs.value }, ...points.map(p => ({ label: p.run.info.run_name || p.run.info.run_id.slice(0, 8), stroke: p.colour, fill: p.colour, width: 0,
        points: { show: true, size: 9, fill: p.colour, stroke: p.colour } }))] };
    requestAnimationFrame(() => new uPlot(opts, data, holder));
  };
  xs.addEventListener("change", draw); ys.addEventListener("change", draw);
  requestAnimationFrame(draw);
  return h("div", {}, h("div", { className: "toolbar" }, "x ", xs, " y ", ys), out);
}

// Every numeric parameter and metric as a vertical axis, each run a line across them;
// values scaled to each axis's own range (its min and max are in the axis label).
function parallelCoordinates(runs, paramKeys, metricKeys) {
  const axes = [...paramKeys.map(k => ["params", k]), ...metricKeys.map(k => ["metrics", k])]
    .map(([kind, key]) => {
      const values = runs.map(r => { const f = (r.data[kind] || []).find(x => x.key === key); return f ? Number(f.value) : NaN; });
      const finite = values.filter(Number.isFinite);
      return { kind, key, values, min: Math.min(...finite), max: Math.max(...finite) };
    })
    .filter(a => a.values.some(Number.isFinite));
  if (axes.length < 2) return h("p", { className: "muted" }, "fewer than two numeric columns");
  const holder = h("div", { className: "card chart", "data-chart": "parallel" });
  const xs = axes.map((_, i) => i);
  const scaled = runs.map((_, r) => axes.map(a => {
    const v = a.values[r];
    if (!Number.isFinite(v)) return null;
    return a.max > a.min ? (v - a.min) / (a.max - a.min) : 0.5;
  }));
  const label = (r) => r.info.run_name || r.info.run_id.slice(0, 8);
  const opts = {
    width: Math.min(Math.max(440, 160 * axes.length), availableWidth()), height: 280,
    scales: { x: { time: false, range: [-0.2, axes.length - 0.8] }, y: { range: [0, 1] } },
    axes: [{ values: (u, ticks) => ticks.map(t => {
      const a = axes[t];
      return Number.isInteger(t) && a ? `${a.key} [${number(a.min)}..${number(a.max)}]` : "";
    }), splits: () => xs }, { show: false }],
    series: [{ label: "axis" }, ...runs.map((r, i) => ({ label: label(r), stroke: PALETTE[i % PALETTE.length], width: 1.5 }))],
  };
  requestAnimationFrame(() => new uPlot(opts, [xs, ...scaled], holder));
  return holder;
}

// ---- models --------------------------------------------------------------------------------

async function modelsPage() {
  setSection("models");
  const body = await api(`${MLFLOW}/registered-models/search?${query({ max_results: 1000 })}`);
  const rows = (body.registered_models || []).map(m => h("tr", {},
    h("td", {}, h("a", { href: `#/models/${encodeURIComponent(m.name)}` }, m.name)),
    h("td", {}, (m.aliases || []).map(a => `${a.alias} → v${a.version}`).join(", ")),
    h("td", {}, (m.latest_versions || []).map(v => `v${v.version} ${v.current_stage}`).join(", ")),
    h("td", {}, when(m.last_updated_timestamp))));
  show(h("h1", {}, "Registered models"), rows.length
    ? h("table", { id: "models" }, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Aliases"), h("th", {}, "Latest versions"), h("th", {}, "Updated"))), h("tbody", {}, rows))
    : h("p", { className: "muted" }, "No registered models yet."));
}

async function modelPage(name) {
  setSection("models");
  const model = (await api(`${MLFLOW}/registered-models/get?${query({ name })}`)).registered_model;
  const versions = (await api(`${MLFLOW}/model-versions/search?${query({ filter: `name='${name.replace(/'/g, "''")}'`, max_results: 1000 })}`)).model_versions || [];
  const history = await api(`${CTFLOW}/models/${encodeURIComponent(name)}/history`).catch(() => ({ entries: [] }));
  const aliases = new Map((model.aliases || []).map(a => [String(a.version), a.alias]));
  const rollback = h("button", { className: "danger", id: "rollback", disabled: !aliases.size }, "Roll back champion");
  rollback.addEventListener("click", async () => {
    if (!confirm(`Move ${name}'s champion back to the previous champion?`)) return;
    try { await api(`${CTFLOW}/models/${encodeURIComponent(name)}/rollback`, { body: {} }); await modelPage(name); } catch (e) { showError(e); }
  });
  const entries = (history.entries || []).slice().reverse();
  show(
    h("h1", {}, name),
    model.description ? h("p", { id: "model-description" }, model.description) : null,
    h("div", { className: "toolbar" }, (model.aliases || []).map(a => h("span", { className: "badge", "data-alias": a.alias }, `${a.alias}: v${a.version}`)), rollback),
    (model.tags || []).length ? [h("h2", {}, "Tags"), kvTable(model.tags.map(t => [t.key, t.value]), "model-tags")] : null,
    h("h2", {}, "Versions"),
    h("table", { id: "versions" }, h("thead", {}, h("tr", {}, h("th", {}, "Version"), h("th", {}, "Aliases"), h("th", {}, "Stage"), h("th", {}, "Run"), h("th", {}, "Created"), h("th", {}, "Description"), h("th", {}, "Tags"))),
      h("tbody", {}, versions.sort((a, b) => Number(b.version) - Number(a.version)).map(v => h("tr", {},
        h("td", {}, h("a", { href: `#/models/${encodeURIComponent(name)}/versions/${v.version}` }, `v${v.version}`)),
        h("td", {}, (model.aliases || []).filter(a => String(a.version) === String(v.version)).map(a => a.alias).join(", ")),
        h("td", {}, v.current_stage),
        h("td", {}, v.run_id ? h("a", { href: `#/runs/${v.run_id}` }, v.run_id.slice(0, 12)) : ""),
        h("td", {}, when(v.creation_timestamp)),
        h("td", { className: "numbers" }, v.description || ""),
        h("td", { className: "numbers" }, (v.tags || []).map(t => `${t.key}=${t.value}`).join(", ")))))),
    h("h2", {}, "Promotion ledger"),
    entries.length ? h("table", { id: "ledger" }, h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Action"), h("th", {}, "Detail"), h("th", {}, "Who"))),
      h("tbody", {}, entries.map(e => h("tr", {}, h("td", {}, when(e.timestamp)), h("td", {}, e.action), h("td", {}, ledgerDetail(e)), h("td", {}, e.user || "")))))
      : h("p", { className: "muted" }, "no entries"));
}

// The signature of an MLmodel file: MLflow writes each part as a single-quoted YAML
// string holding JSON (`  inputs: '[{"type": "double", "name": "x", ...}]'`).
function signatureOf(mlmodel) {
  const out = {};
  for (const part of ["inputs", "outputs", "params"]) {
    const found = mlmodel.match(new RegExp(`^  ${part}: '(.*)'$`, "m"));
    if (found) { try { out[part] = JSON.parse(found[1].replace(/''/g, "'")); } catch (_) { /* not shown */ } }
  }
  return out;
}

function schemaTable(columns, id) {
  return h("table", { id }, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Type"), h("th", {}, "Required"))),
    h("tbody", {}, columns.map(c => h("tr", {}, h("td", {}, c.name || "(unnamed)"),
      h("td", {}, c.type === "tensor" && c["tensor-spec"] ? `tensor ${c["tensor-spec"].dtype} ${JSON.stringify(c["tensor-spec"].shape)}` : c.type),
      h("td", {}, c.required === false ? "no" : "yes")))));
}

async function artifactText(uri, path) {
  const url = artifactUrlAt(uri, path);
  if (!url) return null;
  const response = await fetch(url, { headers: DASHBOARD_HEADER });
  return response.ok ? response.text() : null;
}

function triggerText(trigger) {
  const detail = trigger.detail || {};
  if (trigger.kind === "data") return `new files: ${(trigger.files || []).join(", ")}`;
  if (trigger.kind === "drift") return `${detail.method || "drift"} statistic ${number(detail.statistic)} over threshold ${number(detail.threshold)} on ${detail.rows} rows${detail.reference ? ` against ${detail.reference}` : ""}`;
  if (trigger.kind === "manual") return `by ${trigger.user || "an unnamed user"}`;
  return trigger.dedupe_key || "";
}

// A model version (MLflow's #/models/<name>/versions/<n>): its models:/ URIs, where it came
// from (run <- data snapshot <- trigger <- code and parameters, as `ctflow models lineage`
// prints it), its signature, input example and MLmodel file.
async function modelVersionPage(name, version) {
  setSection("models");
  const mv = (await api(`${MLFLOW}/model-versions/get?${query({ name, version })}`)).model_version;
  const aliases = mv.aliases || [];
  // MLflow 3 registers a logged model as `models:/m-<id>`; the version names it no other way.
  const modelId = mv.model_id || (/^models:\/(m-[0-9a-f]+)$/.exec(mv.source || "") || [])[1];
  const uris = [`models:/${name}/${version}`, ...aliases.map(a => `models:/${name}@${a}`), modelId ? `models:/${modelId}` : null].filter(Boolean);
  const run = mv.run_id ? await api(`${MLFLOW}/runs/get?${query({ run_id: mv.run_id })}`).then(b => b.run).catch(() => null) : null;
  const tags = run ? tagMap(run.data.tags) : {};
  const pipelineRunId = tags["ctflow.pipeline_run"];
  const described = pipelineRunId ? await api(`${CTFLOW}/pipeline-runs/${encodeURIComponent(pipelineRunId)}`).catch(() => null) : null;
  const download = await api(`${MLFLOW}/model-versions/get-download-uri?${query({ name, version })}`).catch(() => ({}));
  const mlmodel = await artifactText(download.artifact_uri, "MLmodel").catch(() => null);
  const signature = mlmodel ? signatureOf(mlmodel) : {};
  const examplePath = mlmodel && (mlmodel.match(/^saved_input_example_info:\n(?:\s+.*\n)*?\s+artifact_path: (\S+)$/m) || [])[1];
  const example = examplePath ? await artifactText(download.artifact_uri, examplePath).catch(() => null) : null;

  const chain = h("ol", { className: "lineage", id: "lineage" });
  if (run) {
    chain.append(h("li", {}, h("strong", {}, "run "), h("a", { href: `#/experiments/${run.info.experiment_id}/runs/${run.info.run_id}` }, run.info.run_name || run.info.run_id), " ", badge(run.info.status),
      (run.data.metrics || []).length ? h("div", { className: "muted" }, (run.data.metrics || []).map(m => `${m.key} = ${number(m.value)}`).join(" · ")) : null));
    const snapshot = described && described.data_snapshot;
    if (snapshot) {
      chain.append(h("li", { id: "lineage-data" }, h("strong", {}, "data "), `snapshot ${snapshot.id} (${snapshot.files.length} files, ${snapshot.rows} rows)`,
        h("table", { id: "snapshot-files" }, h("thead", {}, h("tr", {}, h("th", {}, "File"), h("th", {}, "SHA-256"), h("th", {}, "Rows"), h("th", {}, "Size"))),
          h("tbody", {}, snapshot.files.slice(0, 200).map(f => h("tr", {}, h("td", {}, f.path), h("td", {}, h("code", {}, f.sha256.slice(0, 16))),
            h("td", {}, f.rows === undefined || f.rows === null ? "" : String(f.rows - (f.skip_rows || 0))), h("td", {}, `${f.size} B`))))),
        snapshot.files.length > 200 ? h("p", { className: "muted" }, `${snapshot.files.length - 200} more files`) : null));
    } else {
      const inputs = (run.inputs && run.inputs.dataset_inputs) || [];
      chain.append(h("li", { id: "lineage-data" }, h("strong", {}, "data "), inputs.length ? inputs.map(i => `${i.dataset.name} (digest ${i.dataset.digest})`).join(", ") : h("span", { className: "muted" }, "not recorded")));
    }
    if (described) {
      const pr = described.pipeline_run;
      chain.append(h("li", { id: "lineage-trigger" }, h("strong", {}, "trigger "), `${pr.trigger.kind} (${triggerText(pr.trigger)}) · pipeline `,
        h("a", { href: `#/pipelines/${encodeURIComponent(pr.pipeline)}` }, pr.pipeline), " run ", h("a", { href: `#/pipeline-runs/${pr.id}` }, pr.id.slice(0, 12))));
    }
    chain.append(h("li", { id: "lineage-code" }, h("strong", {}, "code "), `${tags["mlflow.source.name"] || "-"} entry point ${tags["mlflow.project.entryPoint"] || "-"}`,
      tags["mlflow.source.git.commit"] ? ` at commit ${tags["mlflow.source.git.commit"]}` : "",
      (run.data.params || []).length ? h("div", { className: "muted" }, "parameters ", (run.data.params || []).map(p => `${p.key}=${p.value}`).join(" ")) : null));
  } else {
    chain.append(h("li", {}, h("span", { className: "muted" }, `no run: registered from ${mv.source}`)));
  }

  show(
    h("div", { className: "muted" }, h("a", { href: `#/models/${encodeURIComponent(name)}` }, `← ${name}`)),
    h("h1", {}, `${name} v${version} `, badge(mv.status || ""), " ", mv.current_stage && mv.current_stage !== "None" ? badge(mv.current_stage) : null,
      aliases.map(a => h("span", { className: "badge", "data-alias": a }, `@${a}`))),
    mv.description ? h("p", { id: "version-description" }, mv.description) : null,
    h("table", { className: "kv card", id: "version-info" }, h("tbody", {},
      h("tr", {}, h("td", {}, "Created"), h("td", {}, when(mv.creation_timestamp))),
      h("tr", {}, h("td", {}, "Source"), h("td", {}, mv.source || "")),
      mv.run_id ? h("tr", {}, h("td", {}, "Source run"), h("td", {}, h("a", { href: `#/runs/${mv.run_id}` }, mv.run_id))) : null,
      modelId ? h("tr", {}, h("td", {}, "Logged model"), h("td", {}, h("a", { href: `#/logged-models/${modelId}` }, modelId))) : null)),
    h("h2", {}, "URIs"), h("ul", { id: "model-uris" }, uris.map(u => h("li", {}, h("code", {}, u)))),
    h("h2", {}, "Lineage"), chain,
    h("h2", {}, "Signature"), signature.inputs
      ? h("div", { id: "signature" }, h("h3", {}, "Inputs"), schemaTable(signature.inputs, "signature-inputs"),
        signature.outputs ? [h("h3", {}, "Outputs"), schemaTable(signature.outputs, "signature-outputs")] : null)
      : h("p", { className: "muted", id: "signature" }, mlmodel ? "The model was logged without a signature." : "The MLmodel file is not readable through this server."),
    example ? [h("h2", {}, "Input example"), h("pre", { className: "preview", id: "input-example" }, example.slice(0, 20000))] : null,
    h("h2", {}, "Tags"), kvTable((mv.tags || []).map(t => [t.key, t.value]), "version-tags"),
    mlmodel ? [h("h2", {}, "MLmodel"), h("pre", { className: "preview", id: "mlmodel" }, mlmodel)] : null);
}

function ledgerDetail(e) {
  const move = (from, to) => (from ? `${from} → ${to || "none"}` : to || "");
  if (e.action.startsWith("alias")) return `${e.alias}: ${move(e.from_version && `v${e.from_version}`, e.to_version && `v${e.to_version}`)}`;
  if (e.action === "stage_transition") return `v${e.to_version || e.from_version || ""} ${move(e.from_stage, e.to_stage)}`;
  return e.to_version ? `v${e.to_version}` : "";
}

async function loggedModelPage(id) {
  setSection("models");
  const model = (await api(`${MLFLOW}/logged-models/${encodeURIComponent(id)}`)).model;
  const info = model.info || {};
  const data = model.data || {};
  show(
    h("h1", {}, info.name || id, " ", badge(info.status || "")),
    h("table", { className: "kv card", id: "logged-model" }, h("tbody", {},
      h("tr", {}, h("td", {}, "Model ID"), h("td", {}, info.model_id || id)),
      h("tr", {}, h("td", {}, "Created"), h("td", {}, when(info.creation_timestamp_ms))),
      info.source_run_id ? h("tr", {}, h("td", {}, "Source run"), h("td", {}, h("a", { href: `#/runs/${info.source_run_id}` }, info.source_run_id))) : null,
      h("tr", {}, h("td", {}, "Artifacts"), h("td", {}, info.artifact_uri || "")),
      info.model_type ? h("tr", {}, h("td", {}, "Type"), h("td", {}, info.model_type)) : null)),
    h("h2", {}, "Metrics"), kvTable((data.metrics || []).map(m => [m.key, number(m.value)]), "model-metrics"),
    h("h2", {}, "Parameters"), kvTable((data.params || []).map(p => [p.key, p.value]), "model-params"),
    h("h2", {}, "Tags"), kvTable((info.tags || []).map(t => [t.key, t.value]), "model-tags"));
}

async function runRedirect(runId) {
  const run = (await api(`${MLFLOW}/runs/get?${query({ run_id: runId })}`)).run;
  location.replace(`#/experiments/${run.info.experiment_id}/runs/${runId}`);
}

// ---- pipelines -----------------------------------------------------------------------------

function triggerSummary(t) {
  const [kind, spec] = Object.entries(t)[0] || ["?", {}];
  if (kind === "schedule") return `schedule ${spec.cron} (${spec.timezone || "UTC"})`;
  if (kind === "data") return `data ${spec.path}`;
  if (kind === "drift") return `drift ${spec.current && spec.current.served ? `served:${spec.current.served}` : spec.current}`;
  if (kind === "performance") return `performance: ${spec.metric} ${spec.below !== undefined ? `below ${spec.below}` : `above ${spec.above}`} over ${spec.window} (min ${spec.minLabels} labels)`;
  return kind;
}

async function pipelinesPage() {
  setSection("pipelines");
  const body = await api(`${CTFLOW}/pipelines`);
  const pipelines = body.pipelines || [];
  const latest = await Promise.all(pipelines.map(p => api(`${CTFLOW}/pipelines/${encodeURIComponent(p.name)}/runs?max_results=1`).then(b => (b.pipeline_runs || [])[0]).catch(() => null)));
  show(h("h1", {}, "Pipelines"), noControllerHint(body.controller_running), pipelines.length ? h("table", { id: "pipelines" },
    h("thead", {}, h("tr", {}, h("th", {}, "Pipeline"), h("th", {}, "Triggers"), h("th", {}, "Model"), h("th", {}, "Latest run"), h("th", {}, "Next scheduled"), h("th", {}, "State"), h("th", {}, ""))),
    h("tbody", {}, pipelines.map((p, i) => {
      const spec = p.document.spec;
      const run = latest[i];
      return h("tr", { "data-pipeline": p.name },
        h("td", {}, h("a", { href: `#/pipelines/${encodeURIComponent(p.name)}` }, p.name)),
        h("td", {}, (spec.triggers || []).map(triggerSummary).join("; ")),
        h("td", {}, spec.model ? h("a", { href: `#/models/${encodeURIComponent(spec.model.name)}` }, spec.model.name) : ""),
        h("td", {}, run ? h("span", {}, badge(run.phase), " ", h("a", { href: `#/pipeline-runs/${run.id}` }, when(run.creation_time))) : "never"),
        h("td", { className: "next-run" }, p.next_run_time ? when(p.next_run_time) : ""),
        h("td", {}, spec.suspend ? "suspended" : "active"),
        h("td", {}, triggerButton(p.name)));
    }))) : h("p", { className: "muted" }, "No pipelines. Put TrainingPipeline files in `ctflow up --pipelines DIR`."));
}

// Said where runs would otherwise sit in Pending without a word: nothing acts on them
// until a controller runs against this store.
function noControllerHint(running) {
  if (running !== false) return null;
  return h("p", { className: "error", id: "no-controller", role: "status" },
    "No controller is running against this server, so triggered pipeline runs wait in Pending. ",
    "Start one: `ctflow up` runs the server with its controller and workers, or run `ctflow controller` (and `ctflow worker`) beside `ctflow server`.");
}

// Starts a manual run of `name` and opens it.
function triggerButton(name) {
  const button = h("button", { className: "primary trigger", "data-pipeline": name, "aria-label": `trigger ${name}` }, "Trigger");
  button.addEventListener("click", async () => {
    if (!confirm(`Start a run of pipeline ${name} now?`)) return;
    button.disabled = true;
    try {
      const body = await api(`${CTFLOW}/pipelines/${encodeURIComponent(name)}/trigger`, { body: {} });
      location.hash = `#/pipeline-runs/${body.pipeline_run.id}`;
    } catch (error) { showError(error); } finally { button.disabled = false; }
  });
  return button;
}

// A pipeline document as YAML (what `ctflow pipelines apply` takes): block style, strings
// quoted only where YAML would read them as something else.
function toYaml(value, indent) {
  const pad = "  ".repeat(indent || 0);
  const scalar = v => {
    if (v === null || v === undefined) return "null";
    if (typeof v === "number" || typeof v === "boolean") return String(v);
    const text = String(v);
    const plain = /^[A-Za-z0-9_./][A-Za-z0-9_ ./@*:-]*$/.test(text) && !/: |\s$/.test(text)
      && !/^(true|false|null|yes|no|on|off|~|-?[0-9.]+(e[+-]?[0-9]+)?)$/i.test(text);
    return plain ? text : JSON.stringify(text);
  };
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return value.map(item => {
      if (item !== null && typeof item === "object" && Object.keys(item).length) {
        const inner = toYaml(item, (indent || 0) + 1).replace(/^ +/, "");
        return `${pad}- ${inner}`;
      }
      return `${pad}- ${toYaml(item, 0)}`;
    }).join("\n");
  }
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    if (!entries.length) return "{}";
    return entries.map(([k, v]) => {
      if (v !== null && typeof v === "object" && (Array.isArray(v) ? v.length : Object.keys(v).length)) {
        return `${pad}${scalar(k)}:\n${toYaml(v, (indent || 0) + (Array.isArray(v) ? 0 : 1))}`;
      }
      return `${pad}${scalar(k)}: ${toYaml(v, 0)}`;
    }).join("\n");
  }
  return scalar(value);
}

async function pipelinePage(name) {
  setSection("pipelines");
  const [body, described] = await Promise.all([
    api(`${CTFLOW}/pipelines/${encodeURIComponent(name)}/runs?max_results=200`),
    api(`${CTFLOW}/pipelines/${encodeURIComponent(name)}`).catch(() => null)]);
  const pipeline = described && described.pipeline;
  const logged = pipeline && servingLog(pipeline.document.spec);
  const spec = pipeline ? h("details", { id: "pipeline-spec" }, h("summary", {}, "Spec"), h("pre", { className: "preview" }, toYaml(pipeline.document))) : null;
  show(h("h1", {}, name, " ", triggerButton(name)), noControllerHint(described && described.controller_running),
    logged ? h("p", {}, h("a", { id: "live-link", href: `#/pipelines/${encodeURIComponent(name)}/live` }, "Live view of the served model →")) : null,
    pipeline ? h("p", { className: "muted", id: "pipeline-triggers" }, (pipeline.document.spec.triggers || []).map(triggerSummary).join("; ")) : null,
    spec,
    h("table", { id: "pipeline-runs" },
    h("thead", {}, h("tr", {}, h("th", {}, "Pipeline run"), h("th", {}, "Trigger"), h("th", {}, "Phase"), h("th", {}, "Decision"), h("th", {}, "Created"), h("th", {}, "Duration"))),
    h("tbody", {}, (body.pipeline_runs || []).map(r => h("tr", { "data-pipeline-run": r.id },
      h("td", {}, h("a", { href: `#/pipeline-runs/${r.id}` }, r.id.slice(0, 12))),
      h("td", {}, r.trigger.kind),
      h("td", {}, badge(r.phase)),
      h("td", {}, r.decision || ""),
      h("td", {}, when(r.creation_time)),
      h("td", {}, duration(r.start_time, r.end_time)))))));
}

function servingLog(spec) {
  return spec.promotion && spec.promotion.serving && spec.promotion.serving.log ? spec.promotion.serving : null;
}

// Runs of an experiment (by name), oldest first; none when it does not exist yet.
async function runsOfExperiment(name, filter) {
  let experiment;
  try {
    experiment = (await api(`${MLFLOW}/experiments/get-by-name?${query({ experiment_name: name })}`)).experiment;
  } catch (_) { return []; }
  const body = await api(`${MLFLOW}/runs/search`, { body: {
    experiment_ids: [experiment.experiment_id], filter: filter || "", max_results: 1000, order_by: ["attributes.start_time ASC"] } });
  return body.runs || [];
}

// A chart over wall-clock time: x in epoch seconds, one series per label.
function timeChart(title, histories) {
  const { steps, series } = alignSeries(histories);
  const box = h("div", { className: "card chart", "data-chart": title });
  box.append(h("div", {}, h("strong", {}, title)));
  const holder = h("div");
  box.append(holder);
  const opts = {
    width: 440, height: 220, scales: { x: { time: true } }, axes: [{ label: `time (${TIME_ZONE_LABEL})` }, {}],
    tzDate: ts => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    series: [{ label: `time (${TIME_ZONE_LABEL})` }, ...series.map((one, i) => ({ label: one.label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true }))],
  };
  requestAnimationFrame(() => new uPlot(opts, [steps, ...series.map(one => one.values)], holder));
  return box;
}

// What the served model sees: the monitor's numbers per served version (from the log and
// the feedback labels), the drift checks of the served inputs, and the retrains they
// started. Errors and dropped log rows are counted by the scoring server itself.
async function livePage(name) {
  setSection("pipelines");
  // Every pipeline is read once: this one, and those whose drift triggers watch its log.
  const all = (await api(`${CTFLOW}/pipelines`)).pipelines || [];
  const pipeline = all.find(p => p.name === name);
  if (!pipeline) throw new Error(`No pipeline named '${name}'.`);
  const spec = pipeline.document.spec;
  const serving = servingLog(spec);
  const model = spec.model ? spec.model.name : "";
  const metrics = spec.monitoring ? spec.monitoring.metrics.map(m => m.toLowerCase()) : [];
  const versions = await runsOfExperiment(`${name}-monitoring`);
  const byVersion = versions.map(r => ({ run: r, version: tagMap(r.data.tags)["ctflow.monitoring.version"] || "?" }));
  const keys = [...metrics.map(m => `live_${m}`), "live_requests", "live_latency_p50_ms", "live_latency_p99_ms", "live_labelled", "feedback_unmatched"];
  const histories = {};
  await Promise.all(byVersion.flatMap(v => keys.map(async key => {
    const points = await metricHistory(v.run.info.run_id, key);
    (histories[key] = histories[key] || []).push({ label: `v${v.version}`, points });
  })));
  const latest = (run, key) => { const m = (run.data.metrics || []).find(x => x.key === key); return m ? m.value : undefined; };
  // Drift checks of the served inputs: drift triggers (of any pipeline) whose current is this one's log.
  const watching = all.filter(p => (p.document.spec.triggers || []).some(t => t.drift && t.drift.current && t.drift.current.served
    && (t.drift.current.served === name || t.drift.current.served === model)));
  const checks = (await Promise.all(watching.map(p => runsOfExperiment(`${p.name}-drift`)))).flat();
  const pipelineRuns = (await api(`${CTFLOW}/pipelines/${encodeURIComponent(name)}/runs?max_results=200`)).pipeline_runs || [];
  const shadowing = pipelineRuns.filter(r => r.phase === "Shadowing");
  const retrains = pipelineRuns
    .filter(r => r.trigger.kind === "performance" || (r.trigger.kind === "drift" && watching.length));
  const shareHistory = checks.map(r => ({ step: Math.round(Number(r.info.start_time) / 1000), value: latest(r, "drift.share") }))
    .filter(p => p.value !== undefined);
  show(
    h("div", { className: "muted" }, h("a", { href: `#/pipelines/${encodeURIComponent(name)}` }, `← ${name}`)),
    h("h1", {}, `Live: ${model || name}`),
    h("table", { className: "kv card", id: "live-serving" }, h("tbody", {},
      h("tr", {}, h("td", {}, "Served at"), h("td", {}, serving ? `http://${serving.host}:${serving.port} (${model}@${spec.promotion.championAlias})` : "")),
      h("tr", {}, h("td", {}, "Inference log"), h("td", {}, serving ? serving.log.path : "")),
      h("tr", {}, h("td", {}, "Live metrics"), h("td", {}, spec.monitoring ? `${metrics.join(", ")} over ${spec.monitoring.window}, every ${spec.monitoring.interval}` : "none (spec.monitoring)")),
      h("tr", {}, h("td", {}, "Performance triggers"), h("td", {}, (spec.triggers || []).filter(t => t.performance).map(triggerSummary).join("; ") || "none")),
      h("tr", {}, h("td", {}, "Errors, dropped log rows"), h("td", { className: "muted" }, "counted by the scoring server: ctflow_serving_requests_total and ctflow_serving_log_rows_total on its /metrics (and the Grafana dashboard)")))),
    h("h2", {}, "Served versions"),
    byVersion.length ? h("table", { id: "live-versions" }, h("thead", {}, h("tr", {}, ["Version", "Requests", "Labelled", ...metrics, "p50 ms", "p99 ms", "Unmatched labels", "Monitoring run"].map(t => h("th", {}, t)))),
      h("tbody", {}, byVersion.map(v => h("tr", { "data-version": v.version }, h("td", {}, `v${v.version}`),
        h("td", { className: "num" }, number(latest(v.run, "live_requests"))), h("td", { className: "num" }, number(latest(v.run, "live_labelled"))),
        metrics.map(m => h("td", { className: "num", "data-metric": m }, number(latest(v.run, `live_${m}`)))),
        h("td", { className: "num" }, number(latest(v.run, "live_latency_p50_ms"))), h("td", { className: "num" }, number(latest(v.run, "live_latency_p99_ms"))),
        h("td", { className: "num" }, number(latest(v.run, "feedback_unmatched"))),
        h("td", {}, h("a", { href: `#/runs/${v.run.info.run_id}` }, v.run.info.run_id.slice(0, 12)))))))
      : h("p", { className: "muted" }, "No live numbers yet: they appear once the served champion's log has finished files."),
    h("div", { className: "grid", id: "live-charts" },
      keys.filter(k => (histories[k] || []).some(x => x.points.length)).map(k => timeChart(k, histories[k])),
      shareHistory.length ? timeChart("drift share of served inputs", [{ label: "drift.share", points: shareHistory }]) : null),
    shadowing.length ? h("h2", {}, "Shadow comparison running") : null,
    shadowing.map(r => h("div", {}, h("a", { href: `#/pipeline-runs/${r.id}` }, `pipeline run ${r.id.slice(0, 12)}`), shadowTable(r))),
    h("h2", {}, "Drift of served inputs"),
    checks.length ? h("table", { id: "live-drift" }, h("tbody", {}, checks.slice(-20).reverse().map(r => h("tr", {},
      h("td", {}, when(r.info.start_time)), h("td", {}, badge(tagMap(r.data.tags)["ctflow.drift.dataset_drift"] === "true" ? "drift" : "ok")),
      h("td", { className: "num" }, number(latest(r, "drift.share"))), h("td", {}, h("a", { href: `#/runs/${r.info.run_id}` }, "report"))))))
      : h("p", { className: "muted" }, "No drift trigger watches this log (a drift trigger with current: { served: ... })."),
    h("h2", {}, "Retrains started by live traffic"),
    retrains.length ? h("table", { id: "live-retrains" }, h("tbody", {}, retrains.map(r => h("tr", {},
      h("td", {}, h("a", { href: `#/pipeline-runs/${r.id}` }, r.id.slice(0, 12))), h("td", {}, r.trigger.kind),
      h("td", {}, r.trigger.detail && r.trigger.detail.metric ? `${r.trigger.detail.metric} = ${number(r.trigger.detail.value)} on v${r.trigger.detail.version} (${r.trigger.detail.labels} labels)` : ""),
      h("td", {}, badge(r.phase)), h("td", {}, when(r.creation_time))))))
      : h("p", { className: "muted" }, "none"));
}

async function pipelineRunPage(id) {
  setSection("pipelines");
  const body = await api(`${CTFLOW}/pipeline-runs/${encodeURIComponent(id)}`);
  const run = body.pipeline_run;
  const waiting = run.phase === "WaitingApproval" || run.phase === "Paused";
  const comment = h("input", { type: "search", placeholder: "comment (optional)", "aria-label": "comment" });
  const answer = approved => async () => {
    try {
      await api(`${CTFLOW}/pipeline-runs/${encodeURIComponent(id)}/${approved ? "approve" : "reject"}`, { body: { comment: comment.value } });
      await waitForAnswer(id);
    } catch (e) { showError(e); }
  };
  const checkRun = run.trigger.tags && run.trigger.tags["drift.check_run"];
  const gates = (body.events || []).filter(e => e.kind === "gate");
  show(
    h("div", { className: "muted" }, h("a", { href: `#/pipelines/${encodeURIComponent(run.pipeline)}` }, `← ${run.pipeline}`)),
    h("h1", {}, `Pipeline run ${run.id.slice(0, 12)} `, badge(run.phase)),
    run.phase === "Pending" ? noControllerHint(body.controller_running) : null,
    waiting ? h("div", { className: "toolbar card", id: "approval" }, h("strong", {}, "Waiting for a decision: "), comment,
      h("button", { className: "primary", id: "approve", onclick: answer(true) }, "Approve"),
      h("button", { className: "danger", id: "reject", onclick: answer(false) }, "Reject")) : null,
    h("table", { className: "kv card" }, h("tbody", {},
      h("tr", {}, h("td", {}, "Trigger"), h("td", {}, `${run.trigger.kind}${run.trigger.user ? ` by ${run.trigger.user}` : ""}`)),
      (run.trigger.files || []).length ? h("tr", {}, h("td", {}, "Files"), h("td", {}, run.trigger.files.join(", "))) : null,
      h("tr", {}, h("td", {}, "Attempt"), h("td", {}, String(run.attempt))),
      run.run_id ? h("tr", {}, h("td", {}, "MLflow run"), h("td", {}, h("a", { href: `#/runs/${run.run_id}` }, run.run_id))) : null,
      run.model_version ? h("tr", {}, h("td", {}, "Candidate"), h("td", {}, `version ${run.model_version}`)) : null,
      h("tr", {}, h("td", {}, "Decision"), h("td", {}, run.decision || "")),
      checkRun ? h("tr", {}, h("td", {}, "Drift check"), h("td", {}, h("a", { href: `#/runs/${checkRun}` }, "drift report"))) : null)),
    run.shadow ? h("h2", {}, "Shadow comparison with the champion") : null,
    run.shadow ? shadowTable(run) : null,
    h("h2", {}, "Gates"),
    gates.length ? h("table", { id: "gates" }, h("thead", {}, h("tr", {}, h("th", {}, "Gate"), h("th", {}, "Result"), h("th", {}, "Why"), h("th", {}, "Numbers"))),
      h("tbody", {}, gates.map(g => h("tr", {}, h("td", {}, g.gate || ""), h("td", {}, badge(g.result || "")), h("td", {}, g.message),
        h("td", { className: "numbers" }, gateNumbers(g.detail))))))
      : h("p", { className: "muted" }, "no gate decisions yet"),
    h("h2", {}, "History"),
    h("table", { id: "history" }, h("tbody", {}, (body.events || []).map(e => h("tr", {}, h("td", {}, when(e.timestamp)), h("td", {}, e.kind), h("td", {}, e.message))))));
}

// The shadow's numbers so far, added up over the serving replicas as the gate adds them,
// with each replica's own line.
function shadowTable(run) {
  const shadow = run.shadow;
  const gate = ((run.spec.gates || {}).cd || {}).shadow || {};
  const replicas = Object.entries(shadow.replicas || {});
  const sum = key => replicas.reduce((total, [, t]) => total + (t[key] || 0), 0);
  const rows = sum("rows"), agreed = sum("agreed_rows");
  const ratios = replicas.filter(([, t]) => t.requests > 0 && t.champion_p99_ms !== undefined && t.challenger_p99_ms !== undefined)
    .map(([, t]) => t.challenger_p99_ms / Math.max(t.champion_p99_ms, 0.1));
  const percent = v => v === undefined ? "" : `${(v * 100).toFixed(1)}%`;
  const loadError = replicas.map(([, t]) => t.load_error).find(Boolean);
  return h("div", { className: "card", id: "shadow" },
    h("table", { className: "kv" }, h("tbody", {},
      h("tr", {}, h("td", {}, "Challenger"), h("td", {}, `version ${run.model_version || "?"} against champion version ${shadow.champion || "?"}, since ${when(shadow.started)}`)),
      h("tr", {}, h("td", {}, "Compared requests"), h("td", { id: "shadow-requests" }, `${sum("requests")} of ${gate.requests || "?"} (${rows} rows)`)),
      h("tr", {}, h("td", {}, "Agreement"), h("td", { id: "shadow-agreement" }, `${rows ? percent(agreed / rows) : "none yet"}${gate.minAgreement !== undefined ? ` (needs ≥ ${percent(gate.minAgreement)})` : ""}`)),
      h("tr", {}, h("td", {}, "p99 latency ratio"), h("td", {}, `${ratios.length ? Math.max(...ratios).toFixed(2) : "none yet"}${gate.maxLatencyRatio !== undefined ? ` (needs ≤ ${gate.maxLatencyRatio})` : ""}`)),
      h("tr", {}, h("td", {}, "Challenger errors"), h("td", { id: "shadow-errors" }, `${sum("errors")} (at most ${gate.maxErrors || 0})${loadError ? `: ${loadError}` : ""}`)),
      h("tr", {}, h("td", {}, "Copies dropped"), h("td", {}, String(sum("dropped")))))),
    replicas.length ? h("table", { id: "shadow-replicas" }, h("thead", {}, h("tr", {}, ["Replica", "Requests", "Rows agreed", "Errors", "Dropped", "Champion p50/p99 ms", "Challenger p50/p99 ms"].map(t => h("th", {}, t)))),
      h("tbody", {}, replicas.map(([name, t]) => h("tr", {}, h("td", {}, name), h("td", { className: "num" }, String(t.requests)),
        h("td", { className: "num" }, `${t.agreed_rows}/${t.rows}`), h("td", { className: "num" }, String(t.errors)), h("td", { className: "num" }, String(t.dropped)),
        h("td", { className: "num" }, `${number(t.champion_p50_ms)} / ${number(t.champion_p99_ms)}`),
        h("td", { className: "num" }, `${number(t.challenger_p50_ms)} / ${number(t.challenger_p99_ms)}`)))))
      : h("p", { className: "muted" }, "No serving replica has reported yet: the champion's scoring server mirrors its traffic once it sees the run shadowing."));
}

// A gate's numbers: each comparison, CI check or shadow criterion on a line, the CD
// gate's approval and deadline in words; anything else as compact JSON.
function gateNumbers(detail) {
  if (!detail) return "";
  if (Array.isArray(detail.checks)) return h("ul", { className: "comparisons" }, detail.checks.map(c => h("li", {},
    `${c.name}: ${c.exit_code === null || c.exit_code === undefined ? "stopped" : `exit ${c.exit_code}`} in ${(Number(c.duration_ms || 0) / 1000).toFixed(1)}s `,
    badge(c.passed ? "pass" : "fail"))), detail.dryRun ? h("li", {}, "dry run: not blocking") : null);
  if (detail.shadow && !detail.shadow.checks) {
    const g = detail.shadow;
    const criteria = [g.minAgreement !== undefined ? `agreement ≥ ${number(g.minAgreement * 100)}%` : null,
      g.maxLatencyRatio !== undefined ? `p99 latency ≤ ${g.maxLatencyRatio}× the champion's` : null,
      `errors ≤ ${g.maxErrors || 0}`].filter(Boolean);
    return h("ul", { className: "comparisons" }, h("li", {}, `shadowing champion version ${detail.champion}`),
      h("li", {}, `decides after ${g.requests} compared requests${g.duration ? ` and ${g.duration}` : ""}; timeout ${g.timeout}`),
      h("li", {}, criteria.join(", ")));
  }
  if (detail.approval !== undefined) return h("ul", { className: "comparisons" },
    h("li", {}, `approval ${detail.approval}${detail.dryRun ? " (dry run)" : ""}`),
    detail.deadline ? h("li", {}, `rejected without an answer at ${when(detail.deadline)}`) : null);
  const checks = detail.shadow && detail.shadow.checks;
  if (checks) return h("ul", { className: "comparisons" }, checks.map(c => h("li", {},
    `${c.criterion}: ${number(c.value)} ${c.operator} ${number(c.required)} `, badge(c.verdict || ""))));
  const comparisons = detail.comparisons || [];
  if (!comparisons.length) return h("code", {}, JSON.stringify(detail));
  return h("ul", { className: "comparisons" }, comparisons.map(c => h("li", {},
    `${c.metric} (${c.check}): ${number(c.candidate)} ${c.operator || ""} ${number(c.required)} `, badge(c.verdict || ""))));
}

// The controller acts on an answer within moments: show the run once it has moved on.
async function waitForAnswer(id) {
  for (let i = 0; i < 100; i++) {
    const run = (await api(`${CTFLOW}/pipeline-runs/${encodeURIComponent(id)}`)).pipeline_run;
    if (run.phase !== "WaitingApproval" && run.phase !== "Paused") break;
    await new Promise(r => setTimeout(r, 200));
  }
  await pipelineRunPage(id);
}

// ---- routing -------------------------------------------------------------------------------

// ---- signing in (servers started with --auth) ------------------------------------------

// Shows who is signed in, with a way out, in the header.
async function showSession() {
  const slot = document.getElementById("session");
  const session = await api(`${CTFLOW}/session`);
  if (!session.auth || !session.user) { slot.replaceChildren(); return; }
  slot.replaceChildren(
    h("span", { className: "user" }, session.user.username),
    h("button", { type: "button", className: "link", onclick: signOut }, "Sign out"));
}

function signInPage(reason) {
  setSection("");
  const message = h("p", { className: "error", role: "alert", hidden: true });
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { className: "card signin", onsubmit: async (event) => {
    event.preventDefault();
    try {
      await api(`${CTFLOW}/session`, { body: { username: username.value, password: password.value } });
      await showSession();
      delete document.body.dataset.ready;
      await route();
    } catch (error) {
      message.textContent = error.message;
      message.hidden = false;
      password.select();
    }
  } },
  h("h1", {}, "Sign in"),
  reason ? h("p", { className: "muted" }, reason) : null,
  h("label", {}, "Username", username),
  h("label", {}, "Password", password),
  message,
  h("button", { type: "submit" }, "Sign in"));
  show(form);
  username.focus();
}

async function signOut() {
  try {
    await api(`${CTFLOW}/session`, { method: "DELETE" });
    await showSession();
    signInPage("You are signed out.");
  } catch (error) { showError(error); }
}

async function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(search || "");
  document.body.classList.add("loading");
  try {
    if (parts.length === 0 || (parts[0] === "experiments" && parts.length === 1)) await experimentsPage();
    else if (parts[0] === "experiments" && parts.length === 2) await runsPage(parts[1], params);
    else if (parts[0] === "experiments" && parts[2] === "runs" && parts[3]) await runPage(parts[1], parts[3]);
    else if (parts[0] === "runs" && parts[1]) await runRedirect(parts[1]);
    else if (parts[0] === "compare") await comparePage((params.get("runs") || "").split(",").filter(Boolean));
    else if (parts[0] === "compare-runs") await comparePage(mlflowRunList(params.get("runs")));
    else if (parts[0] === "logged-models" && parts[1]) await loggedModelPage(parts[1]);
    else if (parts[0] === "models" && parts.length === 1) await modelsPage();
    else if (parts[0] === "models" && parts[2] === "versions" && parts[3]) await modelVersionPage(parts[1], parts[3]);
    else if (parts[0] === "models") await modelPage(parts[1]);
    else if (parts[0] === "pipelines" && parts.length === 1) await pipelinesPage();
    else if (parts[0] === "pipelines" && parts[2] === "live") await livePage(parts[1]);
    else if (parts[0] === "pipelines") await pipelinePage(parts[1]);
    else if (parts[0] === "pipeline-runs") await pipelineRunPage(parts[1]);
    else show(h("p", { className: "error" }, `No page at #${hash}`));
    document.body.dataset.ready = hash;
  } catch (error) {
    if (error instanceof SignInNeeded) signInPage(error.message);
    else showError(error);
    document.body.dataset.ready = hash;
  } finally {
    document.body.classList.remove("loading");
  }
}

window.addEventListener("hashchange", () => { delete document.body.dataset.ready; route(); });
showSession().catch(() => { /* the page says so when it loads its data */ }).finally(route);
