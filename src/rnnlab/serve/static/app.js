// rnnlab playground: the page's behaviour. Plain JavaScript, no libraries, talks only to the
// server that sent it (/api/...).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], limits: {}, writing: null };

// ------------------------------------------------------------------ helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function setStatus(id, text, error = false) {
  const s = $(id);
  s.textContent = text;
  s.classList.toggle("error", error);
}

async function api(path, body, signal) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value);
}

function formatCount(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return String(n);
}

// ------------------------------------------------------------------ models and tabs

async function loadModels() {
  const data = await (await fetch("/api/models")).json();
  state.models = data.models;
  state.limits = data.limits;
  const select = $("model");
  for (const m of data.models) select.append(el("option", { value: m.name, text: m.name }));
  const poetic = data.models.find((m) => m.poems);
  if (poetic && location.hash === "#poem") select.value = poetic.name;
  $("length").max = data.limits.max_length;
  $("candidates").max = data.limits.max_candidates;
  showModel();
}

function showModel() {
  const m = currentModel();
  if (!m) return;
  const ppl = m.test_perplexity == null ? "no test result" : `test perplexity <b>${m.test_perplexity.toFixed(1)}</b>`;
  $("model-facts").innerHTML =
    `<b>${m.corpus}</b> · ${m.level} level · <b>${m.cell.toUpperCase()}</b> ${m.layers}×${m.hidden}` +
    (m.last_hidden !== m.hidden ? ` (the last ${m.last_hidden})` : "") +
    ` · ${formatCount(m.parameters)} parameters · vocabulary ${formatCount(m.vocab)} · ${ppl}`;
  $("poem-unavailable").hidden = m.poems;
  $("write-poem").disabled = !m.poems;
  $("title-label").hidden = !m.titled;
}

function showTab(name) {
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.tab === name);
  for (const p of document.querySelectorAll(".panel")) p.classList.toggle("active", p.id === "tab-" + name);
  history.replaceState(null, "", "#" + name);
}

// ------------------------------------------------------------------ Write: streamed text

async function generateText() {
  const out = $("write-out");
  const prime = $("prime").value;
  const body = {
    model: $("model").value,
    prime,
    temperature: Number($("temperature").value),
    top_k: numberOrNull("top-k"),
    top_p: numberOrNull("top-p"),
    length: numberOrNull("length") ?? 300,
    seed: numberOrNull("seed"),
    stream: true,
  };
  const controller = new AbortController();
  state.writing = controller;
  $("generate").disabled = true;
  $("stop").disabled = false;
  out.textContent = "";
  const primeSpan = el("span", { class: "prime" });
  const textSpan = el("span", { class: "generated" });
  const caret = el("span", { class: "caret" });
  out.append(primeSpan, textSpan, caret);
  setStatus("write-status", "writing…");
  let first = true;
  let tokens = 0;
  try {
    const response = await api("/api/generate", body, controller.signal);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "null");
        if (event === "piece") {
          if (first) { primeSpan.textContent = data.text; first = false; }
          else { textSpan.textContent += data.text; tokens += 1; }
        } else if (event === "done") {
          setStatus("write-status", `${data.tokens} tokens · seed ${data.seed} (same seed and settings, same text)`);
        } else if (event === "error") {
          setStatus("write-status", data.error, true);
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") setStatus("write-status", `stopped after ${tokens} tokens`);
    else setStatus("write-status", e.message, true);
  } finally {
    caret.remove();
    state.writing = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

// ------------------------------------------------------------------ Poem

async function writePoem() {
  const m = currentModel();
  const radio = (name) => Number(document.querySelector(`input[name=${name}]:checked`).value);
  const text = (id) => ($(id).value.trim() === "" ? null : $(id).value.trim());
  const body = {
    model: m.name,
    form: radio("form"),
    lines: radio("lines"),
    acrostic: text("acrostic"),
    first_line: text("first-line"),
    keywords: text("keywords"),
    title: m.titled ? text("title") : null,
    rhyme: $("rhyme").checked,
    tones: $("tones").checked,
    candidates: numberOrNull("candidates") ?? 1,
    temperature: Number($("poem-temperature").value),
    seed: numberOrNull("poem-seed"),
  };
  $("write-poem").disabled = true;
  setStatus("poem-status", "writing…");
  try {
    const data = await (await api("/api/poem", body)).json();
    const out = $("poem-out");
    out.textContent = "";
    for (const p of data.poems) out.append(poemCard(p, body));
    setStatus("poem-status", `seed ${data.seed}`);
  } catch (e) {
    setStatus("poem-status", e.message, true);
  } finally {
    $("write-poem").disabled = !currentModel().poems;
  }
}

function poemCard(p, body) {
  const card = el("div", { class: "poem-card" });
  if (p.title) card.append(el("div", { class: "poem-title", text: `《${p.title}》` }));
  const text = el("div", { class: "poem-text" });
  for (const line of p.lines) {
    const row = el("div", { class: "poem-line" });
    if (body.acrostic) row.append(el("span", { class: "head", text: line[0] }), line.slice(1));
    else row.append(line);
    text.append(row);
  }
  card.append(text);
  if (p.perplexity != null) {
    card.append(el("div", { class: "poem-meta", text: `perplexity ${p.perplexity.toFixed(0)} per character` }));
  }
  const list = el("ul", { class: "checks" });
  for (const c of p.checks) {
    const cls = (c.ok ? "ok" : "no") + (c.asked ? "" : " unasked");
    const item = el("li", { class: cls, "data-check": c.name, "data-ok": String(c.ok) },
      el("span", { class: "mark", text: c.ok ? "✓" : c.asked ? "✗" : "○" }),
      `${c.name}${c.asked ? "" : " (not asked)"} `,
      el("span", { class: "detail", text: `· ${c.detail}` }));
    list.append(item);
  }
  card.append(list);
  return card;
}

// ------------------------------------------------------------------ Score

function surprisalColor(s, scale) {
  const t = Math.max(0, Math.min(1, s / scale));
  // green (expected) -> yellow -> red (surprised)
  const hue = t < 0.5 ? 140 - (85 * t) / 0.5 : 55 - (45 * (t - 0.5)) / 0.5;
  const light = t < 0.5 ? 88 - 10 * (t / 0.5) : 78 - 8 * ((t - 0.5) / 0.5);
  return `hsl(${hue}, ${t < 0.5 ? 55 + 30 * t * 2 : 85 - 5 * (t - 0.5) * 2}%, ${light}%)`;
}

function shown(token) {
  return token === "\n" ? "↵" : token === " " ? "␣" : token;
}

async function scoreText() {
  const body = { model: $("model").value, text: $("score-text").value, top: 5 };
  $("score").disabled = true;
  setStatus("score-status", "scoring…");
  try {
    const data = await (await api("/api/score", body)).json();
    drawScores(data);
    setStatus("score-status", "");
  } catch (e) {
    setStatus("score-status", e.message, true);
  } finally {
    $("score").disabled = false;
  }
}

function drawScores(data) {
  const m = currentModel();
  const scale = Math.log(m.vocab); // the surprisal of a uniform guess
  const out = $("score-out");
  out.textContent = "";
  const spans = [];
  const level = m.level;
  data.tokens.forEach((t, i) => {
    const span = el("span", { class: "tok" + (t.unknown ? " unknown" : ""), "data-i": String(i) });
    span.textContent = t.text === "<eos>" ? "\n" : t.text;
    span.style.background = surprisalColor(t.surprisal, scale);
    span.dataset.surprisal = t.surprisal.toFixed(3);
    span.addEventListener("mouseenter", (ev) => showTip(ev, t));
    span.addEventListener("mousemove", moveTip);
    span.addEventListener("mouseleave", hideTip);
    out.append(span);
    if (level === "word" && t.text !== "<eos>") out.append(" ");
    spans.push(span);
  });
  const worst = data.tokens.reduce((a, b) => (b.surprisal > a.surprisal ? b : a));
  $("score-summary").innerHTML = "";
  const stat = (label, value) => el("div", {}, el("div", { class: "label", text: label }), el("div", { class: "big", text: value }));
  $("score-summary").append(
    stat("perplexity", data.perplexity.toFixed(2)),
    stat("tokens", String(data.count)),
    stat("total log p", data.total_logprob.toFixed(1) + " nats"),
    stat("most surprising", `${shown(worst.text)} (p ${worst.p.toPrecision(2)})`),
  );
  drawStrip(data.tokens, scale, spans);
  $("legend").hidden = false;
}

function drawStrip(tokens, scale, spans) {
  const canvas = $("strip");
  canvas.hidden = false;
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 800;
  const height = 70;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const top = Math.max(scale, ...tokens.map((t) => t.surprisal));
  const w = width / tokens.length;
  // the uniform guess as a dashed line: above it the model did worse than chance
  const y0 = height - 4 - ((height - 10) * scale) / top;
  tokens.forEach((t, i) => {
    const h = Math.max(1, ((height - 10) * t.surprisal) / top);
    ctx.fillStyle = surprisalColor(t.surprisal, scale);
    ctx.fillRect(i * w, height - 4 - h, Math.max(1, w - (w > 3 ? 1 : 0)), h);
  });
  ctx.setLineDash([4, 4]);
  ctx.strokeStyle = "#8a8378";
  ctx.beginPath();
  ctx.moveTo(0, y0);
  ctx.lineTo(width, y0);
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = "#8a8378";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.fillText("uniform guess", width - 6, y0 + 12);
  canvas.onmousemove = (ev) => {
    const i = Math.min(tokens.length - 1, Math.floor(ev.offsetX / w));
    for (const s of spans) s.classList.remove("lit");
    spans[i].classList.add("lit");
    showTip(ev, tokens[i]);
  };
  canvas.onmouseleave = () => { for (const s of spans) s.classList.remove("lit"); hideTip(); };
}

function showTip(ev, t) {
  const tip = $("tooltip");
  tip.textContent = "";
  tip.append(el("div", {}, el("b", { text: shown(t.text) }),
    ` p = ${t.p.toPrecision(3)} · surprisal ${t.surprisal.toFixed(2)} nats`));
  if (t.unknown) tip.append(el("div", { text: "unknown to the model: read as <unk>" }));
  if (t.alternatives.length) tip.append(el("div", { class: "label", text: "the model expected:" }));
  for (const a of t.alternatives) {
    tip.append(el("div", { class: "alt" + (a.token === t.token ? " is" : "") },
      el("span", { text: shown(a.token) }), el("span", { text: a.p.toFixed(3) })));
  }
  tip.hidden = false;
  moveTip(ev);
}

function moveTip(ev) {
  const tip = $("tooltip");
  tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8) + "px";
  tip.style.top = ev.clientY + 18 + "px";
}

function hideTip() {
  $("tooltip").hidden = true;
}

// ------------------------------------------------------------------ wiring

for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => showTab(t.dataset.tab));
$("model").addEventListener("change", showModel);
$("temperature").addEventListener("input", () => { $("temperature-out").textContent = Number($("temperature").value).toFixed(2); });
$("poem-temperature").addEventListener("input", () => { $("poem-temperature-out").textContent = Number($("poem-temperature").value).toFixed(2); });
$("generate").addEventListener("click", generateText);
$("stop").addEventListener("click", () => state.writing?.abort());
$("write-poem").addEventListener("click", writePoem);
$("score").addEventListener("click", scoreText);
$("prime").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generateText(); });
$("score-text").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) scoreText(); });
if (["#write", "#poem", "#score"].includes(location.hash)) showTab(location.hash.slice(1));
loadModels().catch((e) => setStatus("write-status", "cannot reach the server: " + e.message, true));
