// rnnkit serve: the page. Plain JavaScript, no libraries; every user string goes into the
// page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], limits: {}, view: "probabilities", marks: new Set(), hidden: null };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function showError(msg) {
  const box = $("error");
  box.textContent = msg || "";
  box.hidden = !msg;
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let data = null;
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error((data && data.error) || `${r.status} ${r.statusText}`);
  return data;
}

const fmt = (x, d = 3) => (x === null || x === undefined ? "n/a" : Number(x).toFixed(d));
const pct = (p) => (p === null ? "n/a" : p >= 0.001 ? (100 * p).toFixed(1) + "%" : p.toExponential(1));
const shown = (t) => (t === "\n" ? "\u23ce" : t === " " ? "\u2423" : t === "</s>" ? "\u23ce" : t);

// probability -> colour: red (1e-4 or less) .. yellow .. green (1), on a log scale
function probColour(p) {
  const lp = p > 0 ? Math.log10(p) : -4;
  const t = Math.max(0, Math.min(1, (lp + 4) / 4));
  return `hsl(${Math.round(120 * t)}, 75%, 78%)`;
}
// a signed value in [-1, 1] -> blue (negative) .. white .. red (positive)
function divColour(v) {
  const t = Math.max(-1, Math.min(1, v));
  const hue = t >= 0 ? 5 : 215;
  return `hsl(${hue}, 80%, ${Math.round(100 - 52 * Math.abs(t))}%)`;
}

function current() { return state.models.find((m) => m.name === $("model").value); }
function other() { return state.models.find((m) => m.name === $("model-b").value); }

// --- models and views ----------------------------------------------------------------------

async function init() {
  const r = await fetch("/api/models");
  const data = await r.json();
  state.models = data.models;
  state.limits = data.limits;
  for (const m of state.models) $("model").append(new Option(`${m.name} (${describe(m)})`, m.name));
  $("model").addEventListener("change", () => { modelChanged(); run(); });
  $("model-b").addEventListener("change", () => { if (state.view === "compare") run(); });
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => { setView(b.dataset.view); run(); });
  }
  let timer = null;
  $("go").addEventListener("click", () => { clearTimeout(timer); run(); }); // typing's pending run too
  $("text").addEventListener("input", () => {
    clearTimeout(timer);
    state.marks.clear();
    timer = setTimeout(run, 400);
  });
  $("top-k").addEventListener("change", run);
  for (const id of ["layer", "gate", "rank", "count", "units"]) $(id).addEventListener("change", run);
  $("clear-marks").addEventListener("click", () => { state.marks.clear(); run(); });
  $("generate").addEventListener("click", generate);
  for (const id of ["tr-search", "tr-beam", "tr-nbest", "tr-alpha"]) {
    $(id).addEventListener("change", () => { searchControls(); run(); });
  }
  $("cond-search").addEventListener("change", searchControls);
  $("cond-go").addEventListener("click", () => conditionGenerate().catch((e) => showError(e.message)));
  $("stop").addEventListener("click", () => state.abort && state.abort.abort());
  modelChanged();
}

function describe(m) {
  if (m.kind === "ngram") return `${m.order}-gram`;
  const core = m.cell ? `${m.cell} ${m.num_layers}x${m.hidden_size}` : "";
  const what = { lm: `${m.level} LM`, translate: "translator", condition: "generator" }[m.kind] || m.kind;
  const extra = m.kind === "translate" ? (m.attention === "none" ? "fixed vector c" : `${m.attention} attention`)
    : m.kind === "condition" ? `from ${m.condition_kind}s` : "";
  return [what, core, extra].filter(Boolean).join(", ");
}

function modelChanged() {
  const m = current();
  if (!m) return;
  $("model-info").textContent = describe(m);
  for (const b of document.querySelectorAll("#tabs button")) b.hidden = !m.views.includes(b.dataset.view);
  const b = $("model-b");
  const keep = b.value;
  b.replaceChildren();
  for (const o of state.models) {
    if (o.name !== m.name && (o.kind === "lm" || o.kind === "ngram") && o.level === m.level) {
      b.append(new Option(o.name, o.name));
    }
  }
  if ([...b.options].some((o) => o.value === keep)) b.value = keep;
  const layer = $("layer");
  layer.replaceChildren();
  for (let k = (m.num_layers || 1) - 1; k >= 0; k--) layer.append(new Option(String(k), String(k)));
  const gate = $("gate");
  gate.replaceChildren(new Option("hidden state h", "h"));
  const gates = { rnn: ["z"], gru: ["r", "z", "n"], lstm: ["i", "f", "g", "o", "c"] }[m.cell] || [];
  const names = { rnn: { z: "pre-activation z" }, gru: { r: "reset gate r", z: "update gate z", n: "candidate n" },
    lstm: { i: "input gate i", f: "forget gate f", g: "candidate g", o: "output gate o", c: "cell state c" } }[m.cell] || {};
  for (const g of gates) gate.append(new Option(names[g], g));
  const labels = $("cond-label");
  labels.replaceChildren();
  for (const l of m.labels || []) labels.append(new Option(l, l));
  const vectors = m.kind === "condition" && m.condition_kind !== "label";
  $("cond-note").textContent = vectors ? `This generator is conditioned on vectors of ${m.vector_size} ` +
    "values, which the page cannot take: use rnnkit condition generate --vectors FILE.npy." : "";
  $("cond-go").disabled = vectors;
  $("cond-output").replaceChildren();
  searchControls();
  setView(m.views.includes(state.view) ? state.view : m.views[0]);
}

function setView(view) {
  state.view = view;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === view);
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${view}`;
  $("input").hidden = view === "generate" || view === "condition";
  const tr = view === "translate";
  $("text").placeholder = tr ? "Type one source sentence to translate."
    : "Type or paste text: one sentence a line for word-level models.";
  $("go").textContent = tr ? "Translate" : "Analyse";
  const m = current(), lim = state.limits;
  $("limits").textContent = tr && m ? `limits: one sentence, ${lim.max_source_chars} characters, ` +
    `${m.max_length} ${m.units} (the run's --max-length), beam ${lim.max_beam}`
    : `limits: ${lim.max_text_chars} characters, ${lim.max_lines} lines, ${lim.max_tokens} tokens a request`;
  $("model-b-label").hidden = view !== "compare";
  $("top-k").parentElement.hidden = !["probabilities", "compare"].includes(view);
  document.body.dataset.view = view;
}

async function run() {
  showError("");
  const text = $("text").value;
  const m = current();
  if (!m || state.view === "generate" || state.view === "condition" || !text.trim()) return;
  const stamp = (state.stamp = (state.stamp || 0) + 1);
  try {
    let data;
    const k = Number($("top-k").value || 0);
    if (state.view === "probabilities") data = await post("/api/score", { model: m.name, text, top_k: k });
    else if (state.view === "compare") {
      if (!other()) throw new Error("serve a second model over the same units to compare.");
      data = await post("/api/compare", { a: m.name, b: other().name, text, top_k: k });
    } else if (state.view === "hidden") data = await post("/api/hidden", hiddenRequest(m, text));
    else if (state.view === "classify") data = await post("/api/classify", { model: m.name, text });
    else if (state.view === "tag") data = await post("/api/tag", { model: m.name, text });
    else if (state.view === "translate") data = await post("/api/translate", translateRequest(m, text));
    if (stamp !== state.stamp) return; // a newer request has been sent
    ({ probabilities: drawScores, compare: drawCompare, hidden: drawHidden,
       classify: drawClassify, tag: drawTag, translate: drawTranslate })[state.view](data);
    document.body.dataset.ready = String(stamp);
  } catch (e) {
    if (stamp === state.stamp) showError(e.message);
  }
}

// --- probabilities --------------------------------------------------------------------------

function flatTokens(score) {
  const out = [];
  score.sentences.forEach((s, i) => {
    for (const t of s.per_token) out.push(Object.assign({ sentence: i }, t));
  });
  return out;
}

function tokenSpan(t, level) {
  const span = el("span", "tok", shown(t.token));
  if (t.token === "</s>") span.classList.add("eos");
  if (t.oov) span.classList.add("oov");
  span.dataset.prob = String(t.prob);
  span.dataset.token = t.token;
  return span;
}

function appendToken(box, span, t, level) {
  box.append(span);
  const ends = level === "char" ? t.token === "\n" : t.token === "</s>";
  if (ends) box.append(el("span", "brk"));
  else if (level === "word") box.append(document.createTextNode(" "));
}

function summaryText(box, s, unit) {
  box.replaceChildren();
  const parts = [
    ["log10 P", fmt(s.log10_prob, 4)],
    ["perplexity", fmt(s.perplexity, 3)],
    ["bits per " + unit, fmt(s.bits_per_token, 3)],
    [unit === "word" ? "tokens (</s> included)" : "characters", String(s.tokens)],
    ["OOVs", String(s.oovs)],
  ];
  if (unit === "word") parts.splice(2, 0, ["perplexity excl. OOVs", fmt(s.perplexity_excl_oov, 3)]);
  parts.forEach(([k, v], i) => {
    if (i) box.append(" \u00b7 ");
    box.append(`${k} `);
    const b = el("b", "", v);
    b.dataset.field = k;
    box.append(b);
  });
}

function drawScores(data) {
  summaryText($("summary"), data.summary, data.level);
  const box = $("tokens");
  box.replaceChildren();
  const toks = flatTokens(data);
  toks.forEach((t, i) => {
    const span = tokenSpan(t, data.level);
    span.style.background = probColour(t.prob);
    span.title = `P = ${pct(t.prob)}  (log10 ${fmt(t.log10_prob, 3)})`;
    const show = () => showAlternatives(t, span);
    span.addEventListener("mouseenter", show);
    span.addEventListener("click", show);
    appendToken(box, span, t, data.level);
  });
  legend($("legend"), [1e-4, 1e-3, 1e-2, 0.1, 0.5, 1].map((p) => [probColour(p), pct(p)]), "P(token):");
  plot($("surprisal"), [toks.map((t) => bits(t.prob))], toks.map((t) => shown(t.token)), ["#2f6fde"]);
}

const bits = (p) => (p > 0 ? -Math.log2(p) : null);

function showAlternatives(t, span) {
  for (const s of document.querySelectorAll(".tok.sel")) s.classList.remove("sel");
  span.classList.add("sel");
  const box = $("alts");
  box.replaceChildren(el("h4", "", `${shown(t.token)}: ${pct(t.prob)}`));
  if (!t.alternatives) {
    box.append(el("p", "muted", "This model gives no alternatives (an n-gram model, or alternatives set to 0)."));
    return;
  }
  box.append(el("p", "muted", "What the model expected here:"));
  for (const a of t.alternatives) {
    const row = el("div", "alt");
    if (a.token === t.token) row.classList.add("hit");
    row.append(el("span", "w", shown(a.token)));
    const bar = el("span", "bar");
    bar.style.width = `${Math.max(1, 100 * a.prob)}%`;
    const cell = el("span", "barcell");
    cell.append(bar);
    row.append(cell, el("span", "p", pct(a.prob)));
    row.title = `${a.token}: P = ${a.prob.toExponential(3)}`;
    box.append(row);
  }
}

function legend(box, stops, label) {
  box.replaceChildren(el("span", "lab", label));
  for (const [colour, text] of stops) {
    const sw = el("span", "sw");
    sw.style.background = colour;
    box.append(sw, el("span", "lab", text));
  }
}

// a line plot of one or more series over the tokens, as SVG
function plot(box, series, labels, colours) {
  const NS = "http://www.w3.org/2000/svg";
  const n = labels.length;
  const step = Math.max(4, Math.min(24, 900 / Math.max(n, 1)));
  const W = 40 + step * n, H = 160;
  const values = series.flat().filter((v) => v !== null);
  const top = Math.max(1, ...values);
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H + 20);
  svg.setAttribute("role", "img");
  const y = (v) => 8 + (H - 8) * (1 - v / top);
  for (const g of [0, top / 2, top]) {
    const line = document.createElementNS(NS, "line");
    line.setAttribute("x1", 36); line.setAttribute("x2", W);
    line.setAttribute("y1", y(g)); line.setAttribute("y2", y(g));
    line.setAttribute("stroke", "#e3e5e8");
    const lab = document.createElementNS(NS, "text");
    lab.setAttribute("x", 0); lab.setAttribute("y", y(g) + 4);
    lab.setAttribute("font-size", "10"); lab.setAttribute("fill", "#6b7077");
    lab.textContent = g.toFixed(1);
    svg.append(line, lab);
  }
  series.forEach((vals, s) => {
    const pts = vals.map((v, i) => (v === null ? null : `${40 + step * i + step / 2},${y(v)}`)).filter(Boolean);
    const pl = document.createElementNS(NS, "polyline");
    pl.setAttribute("points", pts.join(" "));
    pl.setAttribute("fill", "none");
    pl.setAttribute("stroke", colours[s]);
    pl.setAttribute("stroke-width", "1.6");
    svg.append(pl);
    vals.forEach((v, i) => {
      if (v === null) return;
      const c = document.createElementNS(NS, "circle");
      c.setAttribute("cx", 40 + step * i + step / 2); c.setAttribute("cy", y(v)); c.setAttribute("r", 2.2);
      c.setAttribute("fill", colours[s]);
      const tip = document.createElementNS(NS, "title");
      tip.textContent = `${labels[i]}: ${v.toFixed(2)} bits`;
      c.append(tip);
      svg.append(c);
    });
  });
  if (step >= 9) {
    labels.forEach((l, i) => {
      const t = document.createElementNS(NS, "text");
      t.setAttribute("x", 40 + step * i + step / 2); t.setAttribute("y", H + 14);
      t.setAttribute("font-size", "9"); t.setAttribute("text-anchor", "middle"); t.setAttribute("fill", "#6b7077");
      t.textContent = l.length > 4 ? l.slice(0, 3) + "\u2026" : l;
      svg.append(t);
    });
  }
  box.replaceChildren(svg);
}

// --- compare --------------------------------------------------------------------------------

function drawCompare(data) {
  $("cmp-a-name").textContent = data.a.model;
  $("cmp-b-name").textContent = data.b.model;
  summaryText($("cmp-a-summary"), data.a.summary, data.a.level);
  summaryText($("cmp-b-summary"), data.b.summary, data.b.level);
  const ta = flatTokens(data.a), tb = flatTokens(data.b);
  const box = $("cmp-tokens");
  box.replaceChildren();
  if (!data.aligned) {
    $("cmp-note").textContent = `${data.message}: no token-by-token difference.`;
    return;
  }
  $("cmp-note").textContent = `${data.a.model} predicts ${data.a_better} tokens better, ` +
    `${data.b.model} ${data.b_better}.`;
  ta.forEach((t, i) => {
    const d = data.diff[i];
    const span = tokenSpan(t, data.a.level);
    span.style.background = divColour(-d / 2); // blue: the first model better
    span.dataset.diff = String(d);
    span.title = `${data.a.model}: ${pct(t.prob)}, ${data.b.model}: ${pct(tb[i].prob)} (log10 ratio ${fmt(d, 2)})`;
    appendToken(box, span, t, data.a.level);
  });
  legend($("cmp-legend"), [[divColour(-1), `${data.a.model} 100x better`], [divColour(0), "same"],
    [divColour(1), `${data.b.model} 100x better`]], "");
  plot($("cmp-plot"), [ta.map((t) => bits(t.prob)), tb.map((t) => bits(t.prob))],
    ta.map((t) => shown(t.token)), ["#2f6fde", "#d9480f"]);
}

// --- hidden units ---------------------------------------------------------------------------

function hiddenRequest(m, text) {
  const req = { model: m.name, text, layer: Number($("layer").value || 0), rank: $("rank").value,
    count: Number($("count").value || 16) };
  const units = $("units").value.split(/[\s,]+/).filter(Boolean).map(Number);
  if (units.length) req.units = units;
  if (req.rank === "correlation") {
    if (!state.hidden || !state.marks.size) throw new Error("mark some tokens first: click them in the heat-map's top row.");
    req.pattern = state.hidden.tokens.map((_, i) => (state.marks.has(i) ? 1 : 0));
  }
  return req;
}

function drawHidden(data) {
  state.hidden = data;
  $("saturation").replaceChildren();
  $("saturation").append(`layer ${data.layer} of ${data.num_layers}, ${data.hidden_size} units (${data.cell}); ` +
    `saturated units over the text (all layers, ${data.saturation_units}, derivative < 0.1): `);
  const b = el("b", "", pct(data.saturated_fraction));
  b.id = "saturated";
  $("saturation").append(b);
  const gate = $("gate").value;
  const rows = gate === "h" || !data.gates[gate] ? data.activations : data.gates[gate];
  const sigmoid = ["i", "f", "o", "r"].includes(gate) || (gate === "z" && data.cell === "gru");
  let scale = 1;
  if (gate === "c" || (gate === "z" && data.cell === "rnn") || data.nonlinearity === "relu") {
    scale = Math.max(1e-6, ...rows.flat().map(Math.abs));
  }
  const box = $("heatmap");
  box.replaceChildren();
  box.classList.toggle("words", data.level === "word");
  const head = el("div", "hm-row");
  head.append(el("span", "hm-label", gate === "h" ? "unit \\ token" : data.gate_names[gate]));
  data.tokens.forEach((t, i) => {
    const c = el("span", "hm-tok", data.level === "word" ? shown(t).slice(0, 6) : shown(t));
    c.title = `${t} (click to mark)`;
    if (state.marks.has(i)) c.classList.add("marked");
    c.addEventListener("click", () => {
      if (state.marks.has(i)) state.marks.delete(i); else state.marks.add(i);
      c.classList.toggle("marked");
    });
    head.append(c);
  });
  box.append(head);
  rows.forEach((vals, r) => {
    const row = el("div", "hm-row");
    const unit = data.units[r];
    const extra = data.correlation ? `r ${fmt(data.correlation[r], 2)}` : `var ${fmt(data.variance[r], 3)}`;
    row.append(el("span", "hm-label", `unit ${unit} (${extra})`));
    vals.forEach((v, i) => {
      const c = el("span", "hm-cell");
      c.style.background = sigmoid ? divColour(v) : divColour(v / scale);
      c.title = `unit ${unit}, ${shown(data.tokens[i])}: ${v.toFixed(3)}`;
      row.append(c);
    });
    box.append(row);
  });
  const sat = el("div", "hm-row");
  sat.append(el("span", "hm-label", "saturated (all layers)"));
  data.saturation.forEach((v) => {
    const c = el("span", "hm-cell");
    c.style.background = `hsl(30, 90%, ${Math.round(100 - 50 * v)}%)`;
    c.title = pct(v);
    sat.append(c);
  });
  box.append(sat);
}

// --- generation -----------------------------------------------------------------------------

async function generate() {
  showError("");
  const m = current();
  const num = (id) => ($(id).value === "" ? undefined : Number($(id).value));
  const body = { model: m.name, prompt: $("prompt").value, max_new_tokens: num("max-new") || 200,
    temperature: num("temperature"), top_k: num("gen-top-k"), top_p: num("top-p"), seed: num("seed") };
  const out = $("gen-output");
  out.replaceChildren(el("b", "", body.prompt));
  $("gen-status").textContent = "drawing\u2026";
  state.abort = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  let count = 0;
  try {
    const r = await fetch("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: state.abort.signal });
    if (!r.ok) {
      let msg = `${r.status}`;
      try { msg = (await r.json()).error; } catch (e) { /* keep the status */ }
      throw new Error(msg);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const ev = /^event: (.*)$/m.exec(block);
        const dt = /^data: (.*)$/m.exec(block);
        if (!ev || !dt) continue;
        const data = JSON.parse(dt[1]);
        if (ev[1] === "token") {
          for (const s of out.querySelectorAll(".new")) s.classList.remove("new");
          out.append(el("span", "gen-tok new", data.text));
          count++;
        } else if (ev[1] === "failed") throw new Error(data.error);
      }
    }
    $("gen-status").textContent = `${count} tokens drawn.`;
  } catch (e) {
    if (e.name === "AbortError") $("gen-status").textContent = `stopped after ${count} tokens.`;
    else { showError(e.message); $("gen-status").textContent = ""; }
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
    document.body.dataset.generated = String(count);
  }
}

// --- classifier and tagger -----------------------------------------------------------------

function drawClassify(data) {
  const res = $("cls-result");
  res.replaceChildren();
  const head = el("p");
  head.append("predicted: ");
  const lab = el("b", "", data.label);
  lab.id = "cls-label";
  head.append(lab, ` (pooling: ${data.pooling})`);
  res.append(head);
  data.labels.forEach((l, i) => {
    const row = el("div", "clsbar");
    const bar = el("span", "bar");
    bar.style.width = `${100 * data.probabilities[i]}%`;
    const cell = el("span", "barcell");
    cell.append(bar);
    row.append(el("span", "", l), cell, el("span", "", pct(data.probabilities[i])));
    res.append(row);
  });
  const k = data.labels.indexOf(data.label);
  const box = $("cls-tokens");
  box.replaceChildren();
  data.tokens.forEach((t, i) => {
    const wrap = el("span", "ctok");
    const span = el("span", "tok", t);
    const p = data.prefix_probabilities[i][k];
    span.style.background = divColour(2 * p - 1);
    span.title = `after "${t}": ` + data.labels.map((l, j) => `${l} ${pct(data.prefix_probabilities[i][j])}`).join(", ");
    if (data.unknown[i]) span.classList.add("oov");
    wrap.append(span);
    if (data.pooling_share) {
      const bar = el("span", "share");
      bar.style.width = `${Math.max(2, 100 * data.pooling_share[i] * data.tokens.length / 2)}%`;
      bar.title = `share of the pooled vector: ${pct(data.pooling_share[i])}`;
      wrap.append(bar);
    }
    box.append(wrap, document.createTextNode(" "));
  });
}

function labelColour(label) {
  let h = 0;
  for (const ch of label.replace(/^[BIES]-/, "")) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return label === "O" ? "#e9ecef" : `hsl(${h}, 70%, 82%)`;
}

function drawTag(data) {
  const box = $("tag-output");
  box.replaceChildren();
  if (data.crf) box.append(el("p", "muted", "Labels by Viterbi over the CRF; confidence is the softmax of each token's emission scores."));
  for (const s of data.sentences) {
    const row = el("div", "tagsent");
    s.words.forEach((w, i) => {
      const t = el("span", "tagtok");
      const lab = el("span", "label", s.labels[i]);
      lab.style.background = labelColour(s.labels[i]);
      t.append(el("span", "word", w), lab);
      t.title = s.alternatives[i].map((a) => `${a.label} ${pct(a.prob)}`).join(", ");
      row.append(t);
    });
    box.append(row);
  }
}

// --- translator and conditional generator ------------------------------------------------

// show only the controls the chosen search takes
function searchControls() {
  const beam = $("tr-search").value === "beam";
  for (const id of ["tr-beam", "tr-nbest", "tr-alpha"]) $(id).parentElement.hidden = !beam;
  const mode = $("cond-search").value;
  for (const id of ["cond-samples", "cond-temperature", "cond-top-k", "cond-top-p", "cond-seed"]) {
    $(id).parentElement.hidden = mode !== "sample";
  }
  for (const id of ["cond-beam", "cond-nbest", "cond-alpha"]) $(id).parentElement.hidden = mode !== "beam";
}

const numberOf = (id) => ($(id).value === "" ? undefined : Number($(id).value));

function translateRequest(m, text) {
  if ($("tr-search").value !== "beam") return { model: m.name, text, beam: 1 };
  const beam = numberOf("tr-beam") || 5;
  return { model: m.name, text, beam, n_best: Math.min(beam, numberOf("tr-nbest") || 1),
    alpha: numberOf("tr-alpha") || 0 };
}

// an attention weight in [0, 1] -> white .. deep blue
const attnColour = (w) => `hsl(215, 85%, ${Math.round(100 - 62 * Math.max(0, Math.min(1, w)))}%)`;

function drawTranslate(data) {
  state.translation = data;
  $("tr-best").textContent = data.translations[0].text;
  const table = $("tr-nbest-list");
  table.replaceChildren();
  const head = el("tr");
  for (const h of ["#", "translation", "log10 P", data.search === "beam" ? "log P / lp(alpha)" : ""]) {
    head.append(el("th", "", h));
  }
  table.append(head);
  data.translations.forEach((t, i) => {
    const row = el("tr", "hyp");
    row.dataset.index = String(i);
    row.append(el("td", "num", String(i + 1)), el("td", "hyp-text", t.text),
      el("td", "num", fmt(t.log10_prob, 4)), el("td", "num", data.search === "beam" ? fmt(t.normalized, 4) : ""));
    row.title = t.ended ? "click to see its units and attention" : "cut at the length limit (no </s>)";
    row.addEventListener("click", () => showHypothesis(i));
    table.append(row);
  });
  showHypothesis(0);
}

function showHypothesis(i) {
  const data = state.translation;
  const t = data.translations[i];
  for (const r of document.querySelectorAll("#tr-nbest-list tr.hyp")) r.classList.toggle("chosen", r.dataset.index === String(i));
  const src = $("tr-src");
  src.replaceChildren();
  data.source.units.forEach((u, j) => {
    const span = el("span", "tok", u);
    if (data.source.unknown[j]) { span.classList.add("oov"); span.title = "unknown to the model: read as <unk>"; }
    src.append(span, document.createTextNode(" "));
  });
  const tgt = $("tr-tgt");
  tgt.replaceChildren();
  t.units.forEach((u, j) => {
    const p = 10 ** t.unit_log10[j];
    const span = el("span", "tok", u);
    span.style.background = probColour(p);
    span.dataset.prob = String(p);
    span.title = `P = ${pct(p)}  (log10 ${fmt(t.unit_log10[j], 3)})`;
    tgt.append(span, document.createTextNode(" "));
  });
  const box = $("tr-heatmap");
  box.replaceChildren();
  $("tr-note").textContent = data.note || (data.translations.length > 1
    ? `Translation ${i + 1}: each row is one target unit, each column a source unit; a row sums to 1. Click another translation above to see its matrix.`
    : "Each row is one target unit, each column a source unit: where the decoder looked when it produced that unit (a row sums to 1).");
  if (!t.attention) return;
  const table = el("table", "attn");
  table.setAttribute("aria-label", "attention: target units as rows, source units as columns");
  const thead = el("thead");
  const top = el("tr");
  top.append(el("th", "", ""));
  for (const u of data.source.units) top.append(el("th", "src", u));
  thead.append(top);
  table.append(thead);
  const body = el("tbody");
  t.attention.forEach((row, r) => {
    const tr = el("tr");
    tr.append(el("th", "row", t.units[r]));
    row.forEach((w, c) => {
      const td = el("td", "attn-cell", w.toFixed(2));
      td.style.background = attnColour(w);
      td.dataset.weight = String(w);
      td.title = `${t.units[r]} \u2190 ${data.source.units[c]}: ${w.toFixed(3)}`;
      tr.append(td);
    });
    body.append(tr);
  });
  table.append(body);
  box.append(table);
  legend(box.appendChild(el("div", "legend")), [0, 0.25, 0.5, 0.75, 1].map((w) => [attnColour(w), String(w)]), "attention:");
}

async function conditionGenerate() {
  showError("");
  const m = current();
  const mode = $("cond-search").value;
  const body = { model: m.name, label: $("cond-label").value };
  if (mode === "sample") {
    Object.assign(body, { num_samples: numberOf("cond-samples") || 1, temperature: numberOf("cond-temperature"),
      top_k: numberOf("cond-top-k"), top_p: numberOf("cond-top-p"), seed: numberOf("cond-seed") });
  } else if (mode === "greedy") body.greedy = true;
  else {
    body.beam = numberOf("cond-beam") || 5;
    Object.assign(body, { n_best: Math.min(body.beam, numberOf("cond-nbest") || 1), alpha: numberOf("cond-alpha") || 0 });
  }
  $("cond-go").disabled = true;
  try {
    const data = await post("/api/condition", body);
    const out = $("cond-output");
    out.replaceChildren();
    for (const o of data.outputs) {
      const li = el("li");
      li.append(el("span", "cond-text", o.text), el("span", "lp", `log10 P ${fmt(o.log10_prob, 3)}`));
      out.append(li);
    }
    document.body.dataset.conditioned = String(Number(document.body.dataset.conditioned || 0) + 1);
  } finally {
    $("cond-go").disabled = false;
  }
}

init().catch((e) => showError(`cannot load the models: ${e.message}`));
