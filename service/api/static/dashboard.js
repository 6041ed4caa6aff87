// regtrain's dashboard: the jobs and sweeps lists at /, a job's loss curves at /jobs/{id}, several
// jobs' curves overlaid at /compare?ids=a,b, a sweep's score against λ at /sweeps/{id}, and the
// workers at /workers, drawn with uPlot from the /v1 API. Plain DOM, no build step; refreshes while jobs and sweeps run.
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

const picked = new Set(); // job ids ticked for /compare, in the order they were ticked

function updatePicked() {
  $("compare").disabled = picked.size < 2;
  $("picked").textContent = picked.size ? `${picked.size} ticked` : "tick two or more jobs to compare their curves";
}
$("compare").onclick = () => { location.href = `/compare?ids=${[...picked].join(",")}`; };

const done = (sw) => sw.trials.filter((t) => FINISHED.has(t.status)).length;
const num = (v) => (typeof v === "number" ? String(+v.toPrecision(4)) : String(v));
const paramText = (params) => Object.entries(params || {}).map(([k, v]) => `${k.split(".").pop()}=${num(v)}`).join(", ");
// what sets a job apart in a comparison: its regularization, dropout and weight decay
function regText(spec) {
  const r = spec.regularization || {}, m = spec.model || {}, o = spec.optimizer || {};
  const parts = [["l1", r.l1], ["l2", r.l2], ["dropout", m.dropout], ["weight_decay", o.weight_decay], ["max_norm", r.max_norm]]
    .filter(([, v]) => typeof v === "number" && v !== 0).map(([k, v]) => `${k}=${num(v)}`);
  return parts.length ? parts.join(", ") : "unregularized";
}

async function showList() {
  $("home").hidden = false;
  updatePicked();
  const [{ jobs }, { sweeps }] = await Promise.all([api("/v1/jobs?limit=50"), api("/v1/sweeps?limit=20")]);
  const table = el("table");
  const head = table.insertRow();
  for (const h of ["", "name", "status", "epoch", "created", "result", "id"]) head.appendChild(el("th", h));
  for (const job of jobs) {
    const row = table.insertRow();
    row.className = "job";
    row.onclick = () => { location.href = `/jobs/${job.id}`; };
    const check = el("input");
    check.type = "checkbox";
    check.checked = picked.has(job.id);
    check.title = "compare";
    check.onchange = () => { check.checked ? picked.add(job.id) : picked.delete(job.id); updatePicked(); };
    const cell = el("td");
    cell.onclick = (e) => e.stopPropagation();
    cell.appendChild(check);
    row.appendChild(cell);
    row.appendChild(el("td", job.name || "—"));
    row.appendChild(el("td", job.status, job.status));
    row.appendChild(el("td", `${job.progress.epoch}/${job.progress.epochs}`));
    row.appendChild(el("td", new Date(job.created_at).toLocaleString()));
    row.appendChild(el("td", headline(job)));
    row.appendChild(el("td", job.id.slice(0, 12), "muted"));
  }
  $("list").replaceChildren(jobs.length ? table : el("p", "No jobs yet: POST one to /v1/jobs.", "muted"));

  const st = el("table");
  const sh = st.insertRow();
  for (const h of ["name", "status", "trials", "objective", "best", "created", "id"]) sh.appendChild(el("th", h));
  for (const sw of sweeps) {
    const row = st.insertRow();
    row.className = "sweep";
    row.onclick = () => { location.href = `/sweeps/${sw.id}`; };
    const obj = sw.objective || {};
    row.appendChild(el("td", sw.name || "—"));
    row.appendChild(el("td", sw.status, sw.status));
    row.appendChild(el("td", `${done(sw)}/${sw.trials.length}`));
    row.appendChild(el("td", `${obj.metric} (${obj.mode})`));
    row.appendChild(el("td", sw.best ? `${fmt(sw.best.score)} at ${paramText(sw.best.params)}` : ""));
    row.appendChild(el("td", new Date(sw.created_at).toLocaleString()));
    row.appendChild(el("td", sw.id.slice(0, 12), "muted"));
  }
  $("sweeps").replaceChildren(sweeps.length ? st : el("p", "No sweeps yet: POST one to /v1/sweeps.", "muted"));
  setTimeout(() => showList().catch(fail), 3000);
}

const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#e16f24", "#bf3989", "#57606a", "#7d4e00"];
const color = (i) => COLORS[i % COLORS.length];
const charts = {};
const present = (v) => v !== null && v !== undefined;

// Epochs are whole numbers: ticks only at integers (1, 2, 5, 10, ... apart), labelled as such;
// the ticks drawn are kept on the chart's box (data-xticks) for whoever inspects the page.
function epochAxis(box) {
  return {
    label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000],
    values: (u, splits) => { box.dataset.xticks = splits.join(","); return splits.map((v) => String(v)); },
  };
}

// The legend shows the latest epoch's values while the cursor is off the chart (uPlot's own
// legend reads "--" until hovered).
function latestIndex(u) {
  for (let i = u.data[0].length - 1; i >= 0; i--) if (u.data.slice(1).some((s) => present(s[i]))) return i;
  return null;
}
function showLatest(u) {
  if (u.cursor.idx !== null && u.cursor.idx !== undefined) return;
  const i = latestIndex(u);
  if (i !== null) u.setLegend({ idx: i }, false);
}

// One small chart: `series` = [{label, values, scale?}] against the epochs `xs`. A series on
// scale "right" gets its own axis on the right (a penalty next to a data loss 100 times larger).
function plot(parent, name, title, xs, series, keepEmpty = false) {
  if (!series.some((s) => s.values.some(present))) return;
  if (!keepEmpty) series = series.filter((s) => s.values.some(present));
  const data = [xs, ...series.map((s) => s.values)];
  const chart = charts[name];
  if (chart && chart.series.length === series.length + 1) { chart.setData(data); showLatest(chart); return; }
  if (chart) chart.destroy();
  let box = $(`chart-${name}`);
  if (!box) { box = el("div"); box.id = `chart-${name}`; box.dataset.chart = name; $(parent).appendChild(box); }
  const right = series.some((s) => s.scale === "right");
  const axes = [epochAxis(box), { size: 60, values: (u, v) => v.map(tickY) }];
  if (right) axes.push({ scale: "right", side: 1, size: 60, grid: { show: false }, values: (u, v) => v.map(tickY) });
  charts[name] = new uPlot({
    title, width: Math.max(300, Math.min(515, (Math.min(window.innerWidth, 1100) - 70) / 2)), height: 220,
    scales: { x: { time: false }, y: { range: yRange }, ...(right ? { right: { range: yRange } } : {}) },
    axes,
    series: [{ label: "epoch", value: (u, v) => (present(v) ? String(v) : "--") },
      ...series.map((s, i) => ({ label: s.label, stroke: s.color || color(i), width: 2, spanGaps: true, scale: s.scale || "y",
        value: (u, v) => (present(v) ? fmt(v) : "--") }))],
    hooks: { ready: [showLatest], setLegend: [showLatest] },
  }, data, $(`chart-${name}`));
}
// uPlot spans a flat series of zeros (an unregularized job's penalty) over 0..100: keep it 0..1.
function yRange(u, min, max) {
  if (min === null || max === null) return [0, 1];
  if (min === max) return min === 0 ? [0, 1] : [min - Math.abs(min) * 0.1, max + Math.abs(max) * 0.1];
  return uPlot.rangeNum(min, max, 0.1, true);
}
const tickY = (v) => (v === null ? "" : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(1) : String(+v.toPrecision(4)));

// What a job's page draws, each on a chart of its own: [name, title, [[field, axis], ...]].
const JOB_CHARTS = [
  ["loss", "loss", [["train_loss"], ["val_loss"], ["train_eval_loss"]]],
  ["metric", "validation metric", [["val_accuracy"], ["val_r2"]]],
  ["gap", "generalization gap (val_loss − train_eval_loss)", [["generalization_gap"]]],
  ["penalty", "data loss and penalty (right axis)", [["data_loss"], ["penalty", "right"]]],
  ["weight_l2_norm", "weight L2 norm (regularized tensors)", [["weight_l2_norm"]]],
  ["weight_sparsity", "weight sparsity (fraction of exact zeros)", [["weight_sparsity"]]],
  ["lr", "learning rate", [["lr"]]],
];

async function showJob(id) {
  $("job").hidden = false;
  const [job, metrics] = await Promise.all([api(`/v1/jobs/${id}`), api(`/v1/jobs/${id}/metrics`)]);
  $("where").textContent = `· ${job.name || job.id}`;
  const p = job.progress;
  $("summary").replaceChildren(
    el("span", job.status, job.status),
    el("span", ` · ${regText(job.spec || {})} · epoch ${p.epoch}/${p.epochs} · ${headline(job)}` + (job.error ? ` · ${job.error.message}` : "")),
  );
  $("spec").textContent = JSON.stringify(job.spec, null, 2);
  const rows = metrics.epochs;
  const xs = rows.map((r) => r.epoch);
  for (const [name, title, fields] of JOB_CHARTS) {
    plot("charts", name, title, xs, fields.map(([k, scale]) => ({ label: k, scale, values: rows.map((r) => r[k] ?? null) })));
  }
  $("charts").dataset.charts = String($("charts").children.length);
  drawReport(job.result);
  if (!FINISHED.has(job.status)) setTimeout(() => showJob(id).catch(fail), 2000);
}

// A classification's test report: the confusion matrix (rows true, columns predicted, each cell
// shaded by its share of the row, so the diagonal reads as recall) and per-class precision,
// recall, F1 and support; and the best checkpoint's score beside the final weights'.
function drawReport(result) {
  const m = (result && result.metrics) || {};
  if (!m.per_class || !m.confusion_matrix) { $("report").hidden = true; return; }
  const classes = (result.classes || Object.keys(m.per_class)).map(String);
  const cm = el("table", null, "confusion");
  cm.dataset.classes = String(classes.length);
  cm.dataset.total = String(m.confusion_matrix.flat().reduce((a, b) => a + b, 0));
  const head = cm.insertRow();
  head.appendChild(el("th", "true ↓ predicted →"));
  for (const c of classes) head.appendChild(el("th", c));
  m.confusion_matrix.forEach((counts, i) => {
    const row = cm.insertRow();
    row.appendChild(el("th", classes[i]));
    const total = counts.reduce((a, b) => a + b, 0);
    counts.forEach((n, j) => {
      const cell = el("td", n);
      const share = total ? n / total : 0;
      // blue on the diagonal (right), red off it (wrong), as deep as the share of the row
      cell.style.background = n ? `rgba(${i === j ? "9,105,218" : "207,34,46"},${(0.12 + 0.88 * share).toFixed(3)})` : "";
      if (share > 0.5) cell.style.color = "#fff";
      else if (!n) cell.style.color = "#bbb";
      cell.title = `true ${classes[i]}, predicted ${classes[j]}: ${n} of ${total}`;
      row.appendChild(cell);
    });
  });
  const pc = el("table", null, "per-class");
  const ph = pc.insertRow();
  for (const h of ["class", "precision", "recall", "f1", "support"]) ph.appendChild(el("th", h));
  for (const c of classes) {
    const r = m.per_class[c] || {};
    const row = pc.insertRow();
    row.appendChild(el("td", c));
    for (const k of ["precision", "recall", "f1"]) row.appendChild(el("td", fmt(r[k])));
    row.appendChild(el("td", r.support));
  }
  $("report-tables").replaceChildren(cm, pc);
  const best = result.best_checkpoint_metrics;
  const note = [`macro F1 ${fmt(m.macro_f1)}`, `accuracy ${fmt(m.test_accuracy)}`];
  if (best && best.macro_f1 !== undefined) note.push(`best checkpoint: macro F1 ${fmt(best.macro_f1)}, accuracy ${fmt(best.test_accuracy)}`);
  $("report-note").textContent = `· ${note.join(" · ")}`;
  $("report").hidden = false;
}

// /compare?ids=a,b,c: the chosen jobs' curves overlaid, one colour per job.
const COMPARE_CHARTS = [
  ["val_loss", "validation loss"], ["train_loss", "training loss"], ["metric", null],
  ["generalization_gap", "generalization gap (val − train loss)"], ["penalty", "penalty"],
  ["weight_l2_norm", "weight L2 norm"], ["weight_sparsity", "weight sparsity"], ["lr", "learning rate"],
];

function overlay(name, title, xs, jobs, metric) {
  // every job keeps its series, and so its colour, even where it has no value for this metric
  const series = jobs.map((j, i) => {
    const byEpoch = new Map(j.rows.map((r) => [r.epoch, r[metric]]));
    return { label: j.label, color: color(i), values: xs.map((x) => byEpoch.get(x) ?? null) };
  });
  plot("compare-charts", name, title, xs, series, true);
}

async function showCompare(ids) {
  $("comparison").hidden = false;
  $("where").textContent = `· compare ${ids.length} jobs`;
  if (!ids.length) throw new Error("no jobs to compare: tick some on the jobs list, or open /compare?ids=ID1,ID2");
  const got = await Promise.allSettled(ids.map((id) => Promise.all([api(`/v1/jobs/${id}`), api(`/v1/jobs/${id}/metrics`)])));
  const jobs = [], problems = [];
  got.forEach((g, i) => (g.status === "fulfilled" ? jobs.push({ job: g.value[0], rows: g.value[1].epochs })
    : problems.push(`${ids[i]}: ${g.reason.message || g.reason}`)));
  if (problems.length) $("error").textContent = problems.join(" · ");
  const names = jobs.map((j) => j.job.name || j.job.id.slice(0, 12));
  jobs.forEach((j, i) => { j.label = names.filter((n) => n === names[i]).length > 1 ? `${names[i]} (${j.job.id.slice(0, 6)})` : names[i]; });
  $("jobs").replaceChildren(...jobs.flatMap((j, i) => {
    const a = el("a", j.label);
    a.href = `/jobs/${j.job.id}`;
    const sw = el("span", null, "swatch");
    sw.style.background = color(i);
    return [sw, a, el("span", ` ${regText(j.job.spec || {})} · ${j.job.status} · epoch ${j.job.progress.epoch}/${j.job.progress.epochs} · ${headline(j.job)}`, "muted"), el("br")];
  }));
  const xs = [...new Set(jobs.flatMap((j) => j.rows.map((r) => r.epoch)))].sort((a, b) => a - b);
  const all = jobs.flatMap((j) => j.rows);
  const metric = ["val_accuracy", "val_r2", "val_mse", "val_mae"].find((k) => all.some((r) => r[k] !== null && r[k] !== undefined));
  for (const [name, title] of COMPARE_CHARTS) {
    if (name === "metric") { if (metric) overlay("metric", metric, xs, jobs, metric); } else overlay(name, title, xs, jobs, name);
  }
  $("compare-charts").dataset.series = String(jobs.length);
  if (jobs.some((j) => !FINISHED.has(j.job.status))) setTimeout(() => showCompare(ids).catch(fail), 2000);
}

// /sweeps/{id}: each trial's objective (its mean over folds) against the first numeric swept
// parameter on a log axis, with the spread of the fold scores as bars; and the trials table.
const std = (xs) => {
  if (!xs || xs.length < 2) return null;
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
};
const tick = (v) => (v === 0 ? "0" : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? String(+v.toPrecision(3)) : v.toExponential(0).replace("e+", "e"));

function sweepChart(sw) {
  const metric = (sw.objective || {}).metric || "score";
  const trials = sw.trials;
  const keys = trials.length ? Object.keys(trials[0].params || {}) : [];
  const xKey = keys.find((k) => trials.every((t) => typeof t.params[k] === "number"));
  const raw = (t) => (xKey ? t.params[xKey] : t.index);
  const positives = xKey ? trials.map(raw).filter((v) => v > 0) : [];
  const log = positives.length > 0 && trials.every((t) => raw(t) >= 0);
  const minPos = Math.min(...positives), maxX = Math.max(...positives);
  const hasZero = log && trials.some((t) => raw(t) === 0);
  const zeroAt = minPos / 10;
  const xOf = (t) => (hasZero && raw(t) === 0 ? zeroAt : raw(t));
  // One series per combination of the other swept params (a grid over λ × dropout draws a
  // curve per dropout); one series for all when they vary freely (random search).
  const others = keys.filter((k) => k !== xKey);
  const tag = (t) => others.map((k) => `${k.split(".").pop()}=${num(t.params[k])}`).join(", ");
  let tags = [...new Set(trials.map(tag))];
  if (tags.length > COLORS.length) tags = [""];
  const groupOf = (t) => (tags.length === 1 ? 0 : tags.indexOf(tag(t)));
  const scored = trials.filter((t) => typeof t.score === "number");
  const xs = [...new Set(scored.map(xOf))].sort((a, b) => a - b);
  const groups = tags.map(() => ({ y: xs.map(() => null), lo: xs.map(() => null), hi: xs.map(() => null), sd: xs.map(() => null) }));
  for (const t of scored) {
    const g = groups[groupOf(t)], i = xs.indexOf(xOf(t));
    const folds = (t.fold_scores || []).filter((v) => typeof v === "number");
    g.y[i] = t.score;
    if (folds.length) { g.lo[i] = Math.min(...folds); g.hi[i] = Math.max(...folds); }
    g.sd[i] = (t.metrics && t.metrics[`${metric}_std`]) ?? std(folds);
  }
  const best = sw.best && scored.find((t) => t.index === sw.best.index);
  const ys = groups.flatMap((g) => [...g.y, ...g.lo, ...g.hi]).filter((v) => v !== null);
  const lo = Math.min(...ys), hi = Math.max(...ys), pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.05 || 0.01;
  const px = uPlot.pxRatio || 1;
  const bars = (u) => {
    const ctx = u.ctx;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    groups.forEach((g, gi) => {
      if (!u.series[gi + 1].show) return;
      ctx.strokeStyle = color(gi);
      ctx.lineWidth = 2 * px;
      ctx.beginPath();
      const dodge = (gi - (groups.length - 1) / 2) * 6 * px; // bars of trials at the same λ side by side
      xs.forEach((x, i) => {
        if (g.lo[i] === null) return;
        const cx = u.valToPos(x, "x", true) + dodge, y0 = u.valToPos(g.lo[i], "y", true), y1 = u.valToPos(g.hi[i], "y", true);
        ctx.moveTo(cx, y0); ctx.lineTo(cx, y1);
        ctx.moveTo(cx - 5 * px, y0); ctx.lineTo(cx + 5 * px, y0);
        ctx.moveTo(cx - 5 * px, y1); ctx.lineTo(cx + 5 * px, y1);
      });
      ctx.stroke();
    });
    if (best) {
      ctx.strokeStyle = "#222";
      ctx.lineWidth = 2 * px;
      ctx.beginPath();
      ctx.arc(u.valToPos(xOf(best), "x", true), u.valToPos(best.score, "y", true), 9 * px, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.restore();
  };
  const showBest = (u) => {
    const i = best ? xs.indexOf(xOf(best)) : -1;
    if ((u.cursor.idx === null || u.cursor.idx === undefined) && i >= 0) u.setLegend({ idx: i }, false);
  };
  const xLabel = (v) => (v === null || v === undefined ? "—" : hasZero && v === zeroAt ? "0" : tick(v));
  const xAxis = { label: xKey ? `${xKey}${log ? " (log scale)" : ""}` : "trial", values: (u, splits) => splits.map(xLabel) };
  if (log) {
    xAxis.splits = (u, ai, min, max) => {
      const out = hasZero ? [zeroAt] : [];
      for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
        const v = Number(`1e${e}`);
        if (v >= min && v <= max && (!hasZero || v > zeroAt * 2)) out.push(v);
      }
      return out;
    };
  }
  const opts = {
    width: Math.min(1060, window.innerWidth - 40), height: 340,
    scales: {
      x: log ? { time: false, distr: 3, log: 10, range: () => [(hasZero ? zeroAt : minPos) / 2.5, maxX * 2.5] } : { time: false },
      y: { range: () => [lo - pad, hi + pad] },
    },
    axes: [xAxis, { label: `${metric} (mean over folds)`, size: 60 }],
    series: [
      { label: xKey || "trial", value: (u, v) => xLabel(v) },
      ...tags.map((t, i) => ({
        label: t || metric, stroke: color(i), width: 1.5, spanGaps: true, value: (u, v) => (present(v) ? fmt(v) : "--"),
        points: { show: true, size: 9, fill: color(i), stroke: color(i) },
      })),
    ],
    // off the chart, the legend shows the best trial (uPlot's reads "--" until hovered)
    hooks: { draw: [bars], ready: [showBest], setLegend: [showBest] },
  };
  const box = $("sweep-chart");
  if (charts.sweep) charts.sweep.destroy();
  box.replaceChildren();
  if (!xs.length) { box.appendChild(el("p", "No trial has a score yet.", "muted")); box.dataset.points = "0"; return { xKey, metric }; }
  charts.sweep = new uPlot(opts, [xs, ...groups.map((g) => g.y)], box);
  box.dataset.points = String(scored.length);
  const folds = (sw.spec && sw.spec.cv_folds) || Math.max(...scored.map((t) => (t.fold_scores || []).length));
  $("sweep-note").textContent = `Each point is a trial's mean ${metric} over its ${folds} fold${folds === 1 ? "" : "s"}; `
    + "the bars span its fold scores (lowest to highest), set a little apart where trials share a value; the circle marks the best trial."
    + (hasZero ? ` A log axis has no 0: ${xKey} = 0 is drawn at ${tick(zeroAt)} (a tenth of the smallest positive value) and labelled 0.` : "")
    + (!log && xKey ? ` ${xKey} has values ≤ 0 only or negative ones, so its axis is linear.` : "");
  return { xKey, metric };
}

// Every trial's objective after every epoch, one chart per fold (a step of the store is fold k's
// epoch e, k·epochs + e: drawn at epoch e of fold k+1, never as "epoch 18" of a 10-epoch trial),
// one line per trial in the same colour on every fold: pruned trials dashed in grey with a cross
// where the pruner stopped them, the best trial thick. What the pruner compared (trials at the
// same fold and epoch), and where it cut.
const PRUNED = "#8c959f";
function trialEpochs(sw, t) {  // epochs per fold: the trial's own when training.epochs is swept
  const own = (t.params || {})["training.epochs"];
  const base = (((sw.spec || {}).base || {}).training || {}).epochs;
  return typeof own === "number" ? own : typeof base === "number" ? base : null;
}
function foldOf(sw, t, step) {  // [fold (0-based), epoch (1-based)]
  const epochs = trialEpochs(sw, t);
  if (!epochs) return [0, step];
  const fold = Math.floor((step - 1) / epochs);
  return [fold, step - fold * epochs];
}
function curvesChart(sw, metric) {
  const box = $("sweep-curves");
  const trials = sw.trials.filter((t) => (t.curve || []).length);
  box.dataset.curves = String(trials.length);
  box.dataset.pruned = String(trials.filter((t) => t.status === "pruned").length);
  for (const c of charts.curves || []) c.destroy();
  charts.curves = [];
  box.replaceChildren();
  if (!trials.length) { box.dataset.folds = "0"; $("curves-note").textContent = ""; return; }
  // per trial, per fold: [[epoch, value], ...]
  const byFold = trials.map((t) => {
    const folds = [];
    for (const [s, v] of t.curve) { const [k, e] = foldOf(sw, t, s); (folds[k] = folds[k] || []).push([e, v]); }
    return folds;
  });
  const nFolds = Math.max(...byFold.map((f) => f.length));
  box.dataset.folds = String(nFolds);
  const best = sw.best ? sw.best.index : null;
  const px = uPlot.pxRatio || 1;
  const width = nFolds === 1 ? Math.min(1060, window.innerWidth - 40) : Math.max(300, Math.min(515, (Math.min(window.innerWidth, 1100) - 70) / 2));
  for (let k = 0; k < nFolds; k++) {
    const xs = [...new Set(byFold.flatMap((f) => (f[k] || []).map(([e]) => e)))].sort((a, b) => a - b);
    const at = new Map(xs.map((x, i) => [x, i]));
    const ys = byFold.map((f) => { const y = xs.map(() => null); for (const [e, v] of f[k] || []) y[at.get(e)] = v; return y; });
    const crosses = (u) => {  // where each pruned trial stopped: its last epoch, in its last fold
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#cf222e";
      ctx.lineWidth = 2 * px;
      trials.forEach((t, i) => {
        const f = byFold[i];
        if (t.status !== "pruned" || !u.series[i + 1].show || f.length - 1 !== k || !f[k]) return;
        const [e, v] = f[k][f[k].length - 1];
        if (!present(v)) return;
        const cx = u.valToPos(e, "x", true), cy = u.valToPos(v, "y", true), r = 4 * px;
        ctx.beginPath();
        ctx.moveTo(cx - r, cy - r); ctx.lineTo(cx + r, cy + r);
        ctx.moveTo(cx - r, cy + r); ctx.lineTo(cx + r, cy - r);
        ctx.stroke();
      });
      ctx.restore();
    };
    const div = el("div");
    div.dataset.fold = String(k + 1);
    box.appendChild(div);
    const opts = {
      title: nFolds === 1 ? `every trial's ${metric}, epoch by epoch` : `fold ${k + 1} of ${nFolds}: ${metric} per epoch`,
      width, height: nFolds === 1 ? 300 : 240,
      scales: { x: { time: false }, y: { range: yRange } },
      axes: [{ ...epochAxis(div), label: nFolds === 1 ? "epoch" : `epoch (fold ${k + 1})` }, { size: 60, values: (u, v) => v.map(tickY) }],
      legend: { show: trials.length <= 8 },
      series: [{ label: nFolds === 1 ? "epoch" : `fold ${k + 1}, epoch`, value: (u, v) => (present(v) ? String(v) : "--") },
        ...trials.map((t, i) => ({
          label: `#${t.index}${t.status === "pruned" ? " (pruned)" : ""}`,
          stroke: t.status === "pruned" ? PRUNED : t.index === best ? "#222" : color(i),
          width: t.index === best ? 3 : 1.5, dash: t.status === "pruned" ? [5, 4] : undefined, spanGaps: true,
          // no point at an epoch: the trial had stopped there (pruned, or early stopping), or is still on its way
          value: (u, v) => (present(v) ? fmt(v) : ["queued", "running"].includes(t.status) ? "--" : "stopped"),
        }))],
      // off the chart, the legend shows the last epoch (uPlot's reads "--" until hovered)
      hooks: { draw: [crosses], ready: [showLatest], setLegend: [showLatest] },
    };
    charts.curves.push(new uPlot(opts, [xs, ...ys], div));
  }
  const pruned = trials.filter((t) => t.status === "pruned").length;
  $("curves-note").textContent = `${trials.length} trial${trials.length === 1 ? "" : "s"}' ${metric} after every epoch`
    + (nFolds > 1 ? `, one chart per fold (each fold trains from scratch: epoch e of fold k is the store's step (k−1)·epochs + e)` : "")
    + `; ${pruned} pruned (dashed grey, a red cross where the pruner stopped each)`
    + (best !== null ? `; the best trial, #${best}, thick black.` : ".");
}

// Several objectives: every finished trial at its first two objectives' values, the Pareto
// front (sw.pareto: no other trial is at least as good on every objective and better on one)
// joined in red.
function paretoChart(sw) {
  const box = $("sweep-pareto");
  if (charts.pareto) { charts.pareto.destroy(); delete charts.pareto; }
  box.replaceChildren();
  const objs = sw.objectives || [];
  if (objs.length < 2 || !sw.pareto) { box.dataset.front = "0"; $("pareto-note").textContent = ""; return; }
  const [a, b] = objs;
  const val = (t, o) => (t.metrics ? t.metrics[o.metric] : null);
  const done = sw.trials.filter((t) => t.status === "succeeded" && typeof val(t, a) === "number" && typeof val(t, b) === "number");
  const front = new Set(sw.pareto);
  box.dataset.front = String(done.filter((t) => front.has(t.index)).length);
  if (!done.length) { $("pareto-note").textContent = ""; return; }
  // one x per trial (trials may share a value of the first objective), in order
  const sorted = [...done].sort((p, q) => val(p, a) - val(q, a) || val(p, b) - val(q, b));
  const xs = sorted.map((t) => val(t, a));
  const all = sorted.map((t) => (front.has(t.index) ? null : val(t, b)));
  const line = sorted.map((t) => (front.has(t.index) ? val(t, b) : null));
  const opts = {
    title: `Pareto front: ${a.metric} (${a.mode}) against ${b.metric} (${b.mode})`,
    width: Math.min(1060, window.innerWidth - 40), height: 300,
    scales: { x: { time: false }, y: { range: yRange } },
    axes: [{ label: a.metric, values: (u, v) => v.map(tickY) }, { label: b.metric, size: 60, values: (u, v) => v.map(tickY) }],
    series: [{ label: a.metric, value: (u, v) => (present(v) ? fmt(v) : "--") },
      { label: "dominated", stroke: PRUNED, width: 0, paths: () => null, points: { show: true, size: 7, fill: PRUNED, stroke: PRUNED } },
      { label: "Pareto front", stroke: "#cf222e", width: 2, spanGaps: true, points: { show: true, size: 9, fill: "#cf222e", stroke: "#cf222e" } }],
  };
  charts.pareto = new uPlot(opts, [xs, all, line], box);
  $("pareto-note").textContent = `${front.size} trial${front.size === 1 ? "" : "s"} on the front (red, joined), `
    + `${done.length - front.size} dominated (grey): no trial is better on both objectives than one on the front.`;
}

async function showSweep(id) {
  $("sweep").hidden = false;
  const sw = await api(`/v1/sweeps/${id}`);
  $("where").textContent = `· sweep ${sw.name || sw.id}`;
  const obj = sw.objective || {};
  const summary = [el("span", sw.status, sw.status),
    el("span", ` · ${done(sw)}/${sw.trials.length} trials · objective ${obj.metric} (${obj.mode})`)];
  if (sw.best) {
    summary.push(el("span", ` · best ${fmt(sw.best.score)} at ${paramText(sw.best.params)}`));
    if (sw.best.job_id) {
      const a = el("a", `its retrained job ${sw.best.job_id.slice(0, 12)}`);
      a.href = `/jobs/${sw.best.job_id}`;
      a.id = "best-job";
      summary.push(el("span", " · "), a);
    }
  }
  if (sw.best && sw.best.test_metrics) {
    const test = Object.entries(sw.best.test_metrics).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    summary.push(el("span", ` · test: ${test}`));
  }
  for (const w of sw.warnings || []) summary.push(el("div", `warning: ${w}`, "muted"));
  if (sw.error) summary.push(el("span", ` · ${sw.error.type}: ${sw.error.message}`, "failed"));
  $("sweep-summary").replaceChildren(...summary);
  $("sweep-spec").textContent = JSON.stringify(sw.spec, null, 2);
  const { metric } = sweepChart(sw);
  curvesChart(sw, metric);
  paretoChart(sw);
  searchViews(sw, metric); // sweep_search.js: parallel coordinates, slices, importances

  // every swept field, conditional ones included (a search's trials need not share them)
  const keys = [...new Set(sw.trials.flatMap((t) => Object.keys(t.params || {})))];
  const table = el("table");
  const head = table.insertRow();
  for (const h of ["#", ...keys, "status", `${metric} (mean)`, "std", "fold scores", "epochs", ""]) head.appendChild(el("th", h));
  for (const t of sw.trials) {
    const row = table.insertRow();
    const isBest = sw.best && t.index === sw.best.index;
    if (isBest) row.className = "best";
    row.appendChild(el("td", t.index));
    for (const k of keys) row.appendChild(el("td", num(t.params[k])));
    row.appendChild(el("td", t.status, t.status));
    row.appendChild(el("td", fmt(t.score)));
    const folds = (t.fold_scores || []).filter((v) => typeof v === "number");
    row.appendChild(el("td", fmt((t.metrics && t.metrics[`${metric}_std`]) ?? std(folds))));
    row.appendChild(el("td", folds.map(fmt).join(", "), "muted"));
    row.appendChild(el("td", t.epochs_trained ?? ""));
    const pruned = t.status === "pruned" ? `pruned at epoch ${t.pruned_at_epoch}` : "";
    const onFront = (sw.pareto || []).includes(t.index) ? "◆ Pareto front " : "";
    const last = el("td", onFront + (isBest ? "★ best" : t.error ? `${t.error.type}` : pruned));
    if (t.reason) last.title = t.reason;
    if (isBest && sw.best.job_id) {
      const a = el("a", "retrained job");
      a.href = `/jobs/${sw.best.job_id}`;
      last.append(" · ", a);
    }
    row.appendChild(last);
  }
  $("trials").replaceChildren(sw.trials.length ? table : el("p", "No trials.", "muted"));
  if (!FINISHED.has(sw.status)) setTimeout(() => showSweep(id).catch(fail), 3000);
}

// /workers: the fleet as the workers' heartbeats in the store describe it (GET /v1/workers),
// with a link to what each trains (another tenant's work shows as busy, without its id).
function busyCell(w) {
  const cell = el("td");
  if (!w.busy) { cell.textContent = "idle"; cell.className = "muted"; return cell; }
  if (!w.busy_with) { cell.textContent = "busy (another tenant's)"; return cell; }
  const sweep = w.busy_kind === "unit" ? w.busy_with.split(".")[0] : w.busy_with;
  const a = el("a", w.busy_kind === "unit" ? `sweep ${sweep.slice(0, 12)}, unit ${w.busy_with.split(".")[1]}` : `${w.busy_kind} ${w.busy_with.slice(0, 12)}`);
  a.href = w.busy_kind === "job" ? `/jobs/${w.busy_with}` : `/sweeps/${sweep}`;
  cell.appendChild(a);
  return cell;
}

async function showWorkers() {
  $("fleet").hidden = false;
  $("where").textContent = "· workers";
  const { workers } = await api("/v1/workers");
  const table = el("table");
  const head = table.insertRow();
  for (const h of ["name", "queues", "device", "training", "epochs/s", "last heartbeat", "version", "Celery name"]) head.appendChild(el("th", h));
  for (const w of workers) {
    const row = table.insertRow();
    row.className = "worker";
    row.appendChild(el("td", w.name));
    row.appendChild(el("td", w.queues.join(", ")));
    row.appendChild(el("td", w.device || "—"));
    row.appendChild(busyCell(w));
    row.appendChild(el("td", w.epochs_per_second ? w.epochs_per_second.toFixed(2) : "0"));
    row.appendChild(el("td", `${Math.max(0, (Date.now() - new Date(w.last_heartbeat)) / 1000).toFixed(0)} s ago`));
    row.appendChild(el("td", w.version));
    row.appendChild(el("td", w.celery_name || "—", "muted"));
  }
  $("workers").replaceChildren(workers.length ? table : el("p", "No worker is running: start one with `regtrain worker`.", "muted"));
  $("workers").dataset.workers = String(workers.length);
  $("workers-note").textContent = "Each worker writes its row every few seconds; one silent for longer than a lease "
    + "(REGTRAIN_LEASE_SECONDS) is left out, and one that stops cleanly leaves at once.";
  setTimeout(() => showWorkers().catch(fail), 3000);
}

function fail(e) { $("error").textContent = String(e.message || e); }

const path = location.pathname;
const jobMatch = path.match(/^\/jobs\/([A-Za-z0-9_-]+)\/?$/);
const sweepMatch = path.match(/^\/sweeps\/([A-Za-z0-9_-]+)\/?$/);
const ids = [...new Set((new URLSearchParams(location.search).get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean))];
(jobMatch ? showJob(jobMatch[1])
  : sweepMatch ? showSweep(sweepMatch[1])
    : /^\/compare\/?$/.test(path) ? showCompare(ids)
      : /^\/workers\/?$/.test(path) ? showWorkers()
        : showList()).catch(fail);
