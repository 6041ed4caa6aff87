// regtrain's dashboard: the jobs list at /, and a job's loss curves at /jobs/{id}, drawn with
// uPlot from GET /v1/jobs/{id}/metrics. Plain DOM, no build step; refreshes while jobs run.
"use strict";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const $ = (id) => document.getElementById(id);
const keyInput = $("key");
keyInput.value = localStorage.getItem("regtrain-key") || "";
$("save").onclick = () => { localStorage.setItem("regtrain-key", keyInput.value.trim()); location.reload(); };

async function api(path) {
  const key = localStorage.getItem("regtrain-key");
  const r = await fetch(path, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  const body = await r.json();
  if (!r.ok) throw new Error(`${r.status}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`);
  $("error").textContent = "";
  return body;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

const fmt = (v) => (typeof v === "number" ? (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : v.toFixed(4)) : v ?? "");

function headline(job) {
  const m = (job.result && job.result.metrics) || {};
  const k = ["test_accuracy", "test_r2", "test_mse"].find((name) => m[name] !== undefined);
  return k ? `${k} ${fmt(m[k])}` : job.error ? `${job.error.type}` : "";
}

async function showList() {
  const { jobs } = await api("/v1/jobs?limit=50");
  const table = el("table");
  const head = table.insertRow();
  for (const h of ["name", "status", "epoch", "created", "result", "id"]) head.appendChild(el("th", h));
  for (const job of jobs) {
    const row = table.insertRow();
    row.className = "job";
    row.onclick = () => { location.href = `/jobs/${job.id}`; };
    row.appendChild(el("td", job.name || "—"));
    row.appendChild(el("td", job.status, job.status));
    row.appendChild(el("td", `${job.progress.epoch}/${job.progress.epochs}`));
    row.appendChild(el("td", new Date(job.created_at).toLocaleString()));
    row.appendChild(el("td", headline(job)));
    row.appendChild(el("td", job.id.slice(0, 12), "muted"));
  }
  $("list").replaceChildren(jobs.length ? table : el("p", "No jobs yet: POST one to /v1/jobs.", "muted"));
  setTimeout(() => showList().catch(fail), 3000);
}

const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700"];
const charts = {};

function draw(name, title, rows, keys) {
  keys = keys.filter((k) => rows.some((r) => r[k] !== null && r[k] !== undefined));
  if (!keys.length) return;
  const data = [rows.map((r) => r.epoch), ...keys.map((k) => rows.map((r) => r[k] ?? null))];
  if (charts[name] && charts[name].series.length === keys.length + 1) { charts[name].setData(data); return; }
  const box = el("div");
  $("charts").appendChild(box);
  charts[name] = new uPlot({
    title, width: Math.min(1060, window.innerWidth - 40), height: 280,
    scales: { x: { time: false } },
    axes: [{ label: "epoch" }, {}],
    series: [{ label: "epoch" }, ...keys.map((k, i) => ({ label: k, stroke: COLORS[i % COLORS.length], width: 2 }))],
  }, data, box);
}

async function showJob(id) {
  $("job").hidden = false;
  const [job, metrics] = await Promise.all([api(`/v1/jobs/${id}`), api(`/v1/jobs/${id}/metrics`)]);
  $("where").textContent = `· ${job.name || job.id}`;
  const p = job.progress;
  $("summary").replaceChildren(
    el("span", job.status, job.status),
    el("span", ` · epoch ${p.epoch}/${p.epochs} · ${headline(job)}` + (job.error ? ` · ${job.error.message}` : "")),
  );
  $("spec").textContent = JSON.stringify(job.spec, null, 2);
  const rows = metrics.epochs;
  draw("loss", "loss", rows, ["train_loss", "val_loss", "data_loss"]);
  draw("metric", "validation", rows, ["val_accuracy", "val_r2"]);
  if (!FINISHED.has(job.status)) setTimeout(() => showJob(id).catch(fail), 2000);
}

function fail(e) { $("error").textContent = String(e.message || e); }

const match = location.pathname.match(/^\/jobs\/([A-Za-z0-9_-]+)\/?$/);
(match ? showJob(match[1]) : showList()).catch(fail);
