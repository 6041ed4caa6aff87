// The sweep page's view of the search (/sweeps/{id}), drawn as SVG built with DOM calls (no
// markup from data: every name and value is set with textContent or as a number attribute):
// - a parallel-coordinates view: one axis per swept field and one for the objective, each trial a
//   line coloured by its objective, pruned and failed trials dashed grey and dotted red;
// - one slice plot per field: the objective against the field's values;
// - the parameter importances the worker computed when the search ended (param_importances).
// Axes follow the sweep's spec: log_uniform (or a grid of positive values ×100 apart or more)
// on a log axis, choices as categories. Loaded before dashboard.js, whose helpers ($, el, fmt,
// num, tick) these functions call when the page runs.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// dark purple (best) to yellow-green (worst): viridis, short of its pale yellow end
const RAMP = [[0x44, 0x01, 0x54], [0x3b, 0x52, 0x8b], [0x21, 0x91, 0x8c], [0x5e, 0xc9, 0x62], [0xb5, 0xde, 0x2b]];
function rampColor(t) { // t = 0 best … 1 worst
  const x = Math.min(Math.max(t, 0), 1) * (RAMP.length - 1), i = Math.min(Math.floor(x), RAMP.length - 2), f = x - i;
  const c = RAMP[i].map((a, k) => Math.round(a + (RAMP[i + 1][k] - a) * f));
  return `rgb(${c.join(",")})`;
}
const FAILED_COLOR = "#cf222e", PRUNED_COLOR = "#8c959f";
const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const catText = (v) => (v === null || v === undefined ? "none" : typeof v === "object" ? JSON.stringify(v) : String(v));
const shortName = (name) => name.split(".").pop();

// Round ticks inside [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart), each labelled with
// the digits that set it apart from its neighbours.
function niceTicks(lo, hi, n = 4) {
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).reduce((p, q) => (Math.abs(q - raw) < Math.abs(p - raw) ? q : p));
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + (step / mag === 2.5 ? 1 : 0));
  const out = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    const r = +v.toFixed(digits);
    out.push([r, Math.abs(r) >= 1e4 || (r !== 0 && Math.abs(r) < 1e-3) ? r.toExponential(1) : r.toFixed(digits)]);
  }
  return out;
}

// Each swept field's axis: {name, kind: "log" | "linear" | "cat", pos(v) → 0..1 or null, ticks: [[v, label]], label}.
function fieldAxes(sw) {
  const spec = sw.spec || {};
  const dims = { ...(spec.grid || {}), ...(spec.random || {}), ...(spec.path || {}), ...(spec.space || {}) };
  const names = [...new Set([...Object.keys(dims), ...sw.trials.flatMap((t) => Object.keys(t.params || {}))])]
    .filter((n) => sw.trials.some((t) => t.params && n in t.params));
  return names.map((name) => {
    const dim = dims[name];
    const seen = sw.trials.map((t) => (t.params || {})[name]).filter((v) => v !== undefined);
    const given = Array.isArray(dim) ? dim : []; // a grid's or path's values
    const choices = dim && !Array.isArray(dim) && dim.choice ? dim.choice : null;
    const numeric = !choices && [...seen, ...given].every(isNum);
    if (!numeric) {
      const cats = [...new Set([...(choices || given).map(catText), ...seen.map(catText)])];
      const at = (v) => { const i = cats.indexOf(catText(v)); return i < 0 ? null : cats.length === 1 ? 0.5 : i / (cats.length - 1); };
      const step = Math.ceil(cats.length / 12); // at most about 12 labels
      return { name, kind: "cat", pos: at, ticks: cats.filter((_, i) => i % step === 0).map((c) => [c, c]), label: name };
    }
    const bounds = dim && !Array.isArray(dim) ? dim.log_uniform || dim.uniform || dim.int : null;
    const values = [...seen, ...given, ...(bounds || [])];
    let lo = Math.min(...values), hi = Math.max(...values);
    const positives = values.filter((v) => v > 0);
    const minPos = Math.min(...positives);
    const log = dim && dim.log_uniform ? true
      : !(dim && (dim.uniform || dim.int)) && lo >= 0 && positives.length > 0 && Math.max(...positives) / minPos >= 100;
    if (log) {
      const hasZero = lo <= 0, zeroAt = minPos / 10; // a log axis has no 0: it sits a decade below
      const a = Math.log10(hasZero ? zeroAt : minPos), b = Math.log10(hi);
      const pos = (v) => (!isNum(v) ? null : b === a ? 0.5 : (Math.log10(v <= 0 ? zeroAt : v) - a) / (b - a));
      const ticks = hasZero ? [[zeroAt, "0"]] : [];
      for (let e = Math.ceil(a - 1e-9); e <= Math.floor(b + 1e-9); e++) if (!hasZero || e > a + 0.5) ticks.push([Number(`1e${e}`), tick(Number(`1e${e}`))]);
      if (ticks.length < 2) ticks.push([10 ** a, tick(10 ** a)], [10 ** b, tick(10 ** b)]);
      return { name, kind: "log", pos, ticks, label: `${name} (log)`, zero: hasZero };
    }
    if (lo === hi) { lo -= 0.5; hi += 0.5; }
    const pos = (v) => (!isNum(v) ? null : (v - lo) / (hi - lo));
    return { name, kind: "linear", pos, ticks: niceTicks(lo, hi), label: name };
  });
}

function objectiveAxis(sw, metric) {
  const mode = (sw.objective || {}).mode || "min";
  const scores = sw.trials.map((t) => t.score).filter(isNum);
  let lo = Math.min(...scores), hi = Math.max(...scores);
  if (!scores.length) { lo = 0; hi = 1; }
  if (lo === hi) { lo -= Math.abs(lo) * 0.05 || 0.5; hi += Math.abs(hi) * 0.05 || 0.5; }
  const pos = (v) => (isNum(v) ? (v - lo) / (hi - lo) : null);
  const ticks = niceTicks(lo, hi);
  // 0 the best trial, 1 the worst: the colour of its line
  const badness = (v) => (isNum(v) ? (mode === "max" ? 1 - pos(v) : pos(v)) : null);
  return { name: metric, kind: "linear", pos, ticks, label: `${metric} (${mode})`, badness, mode };
}

// Trials drawn: every scored one, and the pruned and failed ones (no objective: their line ends
// at the last field axis).
const drawnTrials = (sw) => sw.trials.filter((t) => isNum(t.score) || t.status === "pruned" || t.status === "failed");
function lineStyle(t, obj, best) {
  if (isNum(t.score) && t.status !== "pruned") {
    return { stroke: t.index === best ? "#000" : rampColor(obj.badness(t.score)), width: t.index === best ? 3 : 1.6 };
  }
  return t.status === "failed" ? { stroke: FAILED_COLOR, width: 1.2, dash: "2 3" } : { stroke: PRUNED_COLOR, width: 1.2, dash: "6 4" };
}

function parallelChart(sw, metric) {
  const box = $("sweep-parallel");
  const axes = fieldAxes(sw);
  const obj = objectiveAxis(sw, metric);
  const trials = drawnTrials(sw);
  box.dataset.axes = String(axes.length);
  box.dataset.lines = String(trials.length);
  if (!axes.length || !trials.length) { box.replaceChildren(); $("parallel-note").textContent = ""; return; }
  const W = Math.min(1060, window.innerWidth - 40), H = 340, left = 60, right = 90, top = 46, bottom = 28;
  const all = [...axes, obj];
  const gap = (W - left - right) / Math.max(all.length - 1, 1);
  const xAt = (i) => left + i * gap, yAt = (p) => top + (1 - p) * (H - top - bottom);
  const root = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", class: "parallel" });
  root.appendChild(svgEl("title", {}, `every trial across ${axes.length} swept field${axes.length === 1 ? "" : "s"} and ${metric}`));
  const defs = svgEl("defs");
  const grad = svgEl("linearGradient", { id: "objective-ramp", x1: 0, y1: obj.mode === "max" ? 0 : 1, x2: 0, y2: obj.mode === "max" ? 1 : 0 });
  for (let i = 0; i <= 4; i++) grad.appendChild(svgEl("stop", { offset: i / 4, "stop-color": rampColor(i / 4) }));
  defs.appendChild(grad);
  root.appendChild(defs);
  // the lines first, the best last (on top); the worse a trial, the earlier it is drawn
  const best = sw.best ? sw.best.index : null;
  const rank = (t) => (t.status === "pruned" || !isNum(t.score) ? -1 : t.index === best ? 2 : 1 - obj.badness(t.score));
  const order = [...trials].sort((p, q) => rank(p) - rank(q));
  const lines = svgEl("g", { class: "pc-lines", fill: "none" });
  for (const t of order) {
    const pts = [];
    axes.forEach((a, i) => { const p = a.pos((t.params || {})[a.name]); if (p !== null && t.params && a.name in t.params) pts.push([xAt(i), yAt(p)]); });
    if (isNum(t.score) && t.status !== "pruned") pts.push([xAt(axes.length), yAt(obj.pos(t.score))]);
    if (!pts.length) continue;
    const s = lineStyle(t, obj, best);
    const attrs = { points: pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "), stroke: s.stroke, "stroke-width": s.width, "stroke-opacity": 0.85 };
    if (s.dash) attrs["stroke-dasharray"] = s.dash;
    const line = svgEl("polyline", attrs);
    line.dataset.trial = String(t.index);
    line.appendChild(svgEl("title", {}, `#${t.index} ${t.status}: ${paramText(t.params)}${isNum(t.score) ? ` → ${metric} ${fmt(t.score)}` : ""}`));
    lines.appendChild(line);
  }
  root.appendChild(lines);
  all.forEach((a, i) => {
    const g = svgEl("g", { class: "pc-axis", "font-size": 11, fill: "#444" });
    g.dataset.param = a === obj ? "" : a.name;
    g.dataset.scale = a.kind;
    const x = xAt(i);
    if (a === obj) g.appendChild(svgEl("rect", { x: x - 4, y: yAt(1), width: 8, height: yAt(0) - yAt(1), fill: "url(#objective-ramp)" }));
    g.appendChild(svgEl("line", { x1: x, x2: x, y1: yAt(0), y2: yAt(1), stroke: "#333", "stroke-width": 1 }));
    for (const [v, label] of a.ticks) {
      const y = yAt(a.pos(v));
      g.appendChild(svgEl("line", { x1: x - 4, x2: x, y1: y, y2: y, stroke: "#333" }));
      // the objective's labels to the right of its colour bar, the fields' to the left of theirs
      const tx = svgEl("text", { x: a === obj ? x + 8 : x - 7, y: y + 4, "text-anchor": a === obj ? "start" : "end" },
        label.length > 14 ? `${label.slice(0, 13)}…` : label);
      if (label.length > 14) tx.appendChild(svgEl("title", {}, label));
      g.appendChild(tx);
    }
    const name = gap < 150 ? `${shortName(a.name)}${a.kind === "log" ? " (log)" : ""}` : a.label;
    const head = svgEl("text", { x, y: top - 22, "text-anchor": i === all.length - 1 ? "end" : i === 0 ? "start" : "middle", "font-weight": 600, fill: "#222" }, name);
    head.appendChild(svgEl("title", {}, a.label));
    g.appendChild(head);
    if (a === obj) g.appendChild(svgEl("text", { x, y: top - 8, "text-anchor": "end", fill: "#777" }, "mean over folds"));
    root.appendChild(g);
  });
  box.replaceChildren(root);
  const pruned = trials.filter((t) => t.status === "pruned").length, failed = trials.filter((t) => t.status === "failed").length;
  $("parallel-note").textContent = `Each line is a trial: its value of every swept field, then its mean ${metric} over folds (right axis). `
    + `Colour follows ${metric}: dark purple the best, yellow-green the worst; the best trial is black and thick. `
    + `${pruned} pruned (dashed grey) and ${failed} failed (dotted red) trials have no ${metric} and stop at the last field. `
    + (axes.some((a) => a.zero) ? "A log axis has no 0: 0 sits a decade below the smallest positive value, labelled 0. " : "")
    + "Hover a line for its trial.";
}

// One small chart per field: each finished trial's objective against its value.
function slicePlots(sw, metric) {
  const box = $("sweep-slices");
  const axes = fieldAxes(sw);
  const obj = objectiveAxis(sw, metric);
  const scored = sw.trials.filter((t) => isNum(t.score) && t.status !== "pruned");
  box.dataset.slices = scored.length ? String(axes.length) : "0";
  if (!scored.length) { box.replaceChildren(); return; }
  const best = sw.best ? sw.best.index : null;
  const W = Math.max(300, Math.min(340, (Math.min(window.innerWidth, 1100) - 80) / 3)), H = 230;
  const left = 58, right = 14, top = 26, bottom = 44;
  const xAt = (p) => left + 8 + p * (W - left - right - 16), yAt = (p) => top + 8 + (1 - p) * (H - top - bottom - 16);
  const charts = axes.map((a) => {
    const root = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "font-size": 11 });
    root.dataset.slice = a.name;
    root.dataset.scale = a.kind;
    root.appendChild(svgEl("title", {}, `${metric} against ${a.name}`));
    root.appendChild(svgEl("text", { x: left, y: 14, "font-weight": 600, fill: "#222" }, `${metric} against ${shortName(a.name)}`));
    root.appendChild(svgEl("rect", { x: left, y: top, width: W - left - right, height: H - top - bottom, fill: "none", stroke: "#ccc" }));
    for (const [v, label] of a.ticks) {
      const x = xAt(a.pos(v));
      root.appendChild(svgEl("line", { x1: x, x2: x, y1: H - bottom, y2: H - bottom + 4, stroke: "#333" }));
      root.appendChild(svgEl("text", { x, y: H - bottom + 15, "text-anchor": "middle", fill: "#444" }, label.length > 10 ? `${label.slice(0, 9)}…` : label));
    }
    for (const [v, label] of obj.ticks) {
      const y = yAt(obj.pos(v));
      root.appendChild(svgEl("line", { x1: left, x2: W - right, y1: y, y2: y, stroke: "#eee" }));
      root.appendChild(svgEl("text", { x: left - 5, y: y + 4, "text-anchor": "end", fill: "#444" }, label));
    }
    root.appendChild(svgEl("text", { x: left + (W - left - right) / 2, y: H - 6, "text-anchor": "middle", fill: "#222" }, a.label));
    let points = 0;
    // categories: trials sharing a value set a little apart, the same way on every refresh
    const spread = (t) => (a.kind === "cat" ? ((t.index * 0.618) % 1 - 0.5) * 0.06 : 0);
    for (const t of [...scored].sort((p, q) => (p.index === best) - (q.index === best))) {
      const p = a.pos((t.params || {})[a.name]);
      if (p === null || !(t.params && a.name in t.params)) continue;
      const c = svgEl("circle", { cx: xAt(p + spread(t)), cy: yAt(obj.pos(t.score)), r: t.index === best ? 6 : 4,
        fill: rampColor(obj.badness(t.score)), stroke: t.index === best ? "#000" : "#fff", "stroke-width": t.index === best ? 2 : 0.8 });
      c.appendChild(svgEl("title", {}, `#${t.index}: ${a.name}=${num(t.params[a.name])} → ${metric} ${fmt(t.score)}`));
      root.appendChild(c);
      points++;
    }
    root.dataset.points = String(points);
    return root;
  });
  box.replaceChildren(...charts);
}

// The worker's fANOVA importances (param_importances), most important first, as bars.
function importanceBars(sw) {
  const box = $("sweep-importance");
  const imp = sw.param_importances;
  const entries = imp ? Object.entries(imp).filter(([, v]) => isNum(v)).sort((p, q) => q[1] - p[1]) : [];
  box.dataset.bars = String(entries.length);
  if (!entries.length) {
    box.replaceChildren();
    $("importance-note").textContent = FINISHED.has(sw.status) || sw.best
      ? "No parameter importances: fewer than two trials scored, every score was the same, or no field took two values."
      : "Parameter importances are computed when the search ends.";
    return;
  }
  const W = Math.min(700, window.innerWidth - 40), row = 24, top = 26, label = 190, right = 60;
  const H = top + entries.length * row + 22;
  const root = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "font-size": 12, class: "importance" });
  root.appendChild(svgEl("title", {}, "parameter importances (fANOVA)"));
  root.appendChild(svgEl("text", { x: 0, y: 14, "font-weight": 600, fill: "#222" }, "parameter importance (fANOVA)"));
  const max = Math.max(...entries.map(([, v]) => v), 1e-9), span = W - label - right;
  entries.forEach(([name, v], i) => {
    const y = top + i * row;
    const g = svgEl("g");
    g.dataset.param = name;
    const t = svgEl("text", { x: label - 8, y: y + 15, "text-anchor": "end", fill: "#222" }, name.length > 28 ? `…${name.slice(-27)}` : name);
    t.appendChild(svgEl("title", {}, name));
    g.appendChild(t);
    g.appendChild(svgEl("rect", { x: label, y: y + 3, width: Math.max(1, (v / max) * span), height: row - 8, fill: "#0969da" }));
    g.appendChild(svgEl("text", { x: label + Math.max(1, (v / max) * span) + 6, y: y + 15, fill: "#444" }, v.toFixed(3)));
    root.appendChild(g);
  });
  root.appendChild(svgEl("line", { x1: label, x2: label, y1: top, y2: top + entries.length * row, stroke: "#333" }));
  root.appendChild(svgEl("text", { x: label, y: H - 4, fill: "#777" }, "share of the objective's variance each field explains (sums to 1)"));
  box.replaceChildren(root);
  $("importance-note").textContent = "Parameter importances: Optuna's fANOVA over the succeeded trials' mean "
    + "objective, computed by the worker when the search ended (pruned and failed trials are not weighed).";
}

function searchViews(sw, metric) {
  parallelChart(sw, metric);
  slicePlots(sw, metric);
  importanceBars(sw);
}
