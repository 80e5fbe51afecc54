// lstmgen's page: reads /info, sends the settings to /generate/stream and shows the text as it comes.
// Plain JavaScript, no build step; every text from the server goes in through textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const CONTROLS = ["length", "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram",
  "stop_at", "num_samples", "seed", "acrostic", "adapt"];
const NUMBERS = new Set(["length", "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram",
  "num_samples", "seed"]);
const STORE = "lstmgen.settings";
let running = null; // the AbortController of the stream in progress

function setState(state) {
  document.body.dataset.state = state;
  $("generate").disabled = state === "writing";
  $("stop").disabled = state !== "writing";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function showValues() {
  for (const id of ["temperature", "repetition_penalty"]) {
    $(`${id}-value`).textContent = Number($(id).value).toFixed(2);
  }
}

function showContextCount() {
  const chars = $("context").value.trim().length;
  const most = $("context").maxLength;
  $("context-count").textContent = chars ? `${chars.toLocaleString()} / ${most.toLocaleString()} characters` : "";
}

function saveSettings() {
  const saved = {};
  for (const id of CONTROLS) saved[id] = $(id).value;
  saved.prompt = $("prompt").value;
  saved.context = $("context").value;
  saved.multi = $("multi").checked;
  try { localStorage.setItem(STORE, JSON.stringify(saved)); } catch (e) { /* private mode: no memory */ }
}

function loadSettings() {
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem(STORE) || "{}"); } catch (e) { saved = {}; }
  for (const id of CONTROLS) if (typeof saved[id] === "string") $(id).value = saved[id];
  if (typeof saved.prompt === "string") $("prompt").value = saved.prompt;
  if (typeof saved.context === "string") $("context").value = saved.context;
  $("context-box").open = $("context").value.trim() !== ""; // a context kept from last time shows
  showContextCount();
  $("multi").checked = saved.multi === true;
  showValues();
}

function applyDefaults(defaults) {
  for (const [id, value] of Object.entries(defaults || {})) {
    if (CONTROLS.includes(id) && value !== null && value !== undefined) $(id).value = String(value);
  }
  $("seed").value = "";
  $("acrostic").value = "";
  showValues();
}

async function loadInfo() {
  try {
    const response = await fetch("/info");
    const info = await response.json();
    const run = $("run");
    run.textContent = "";
    const name = document.createElement("b");
    name.textContent = info.run;
    run.append(name);
    const valid = info.best_valid;
    const parts = [`${info.tokenizer} tokens`, `${info.vocab_size.toLocaleString()} in the vocabulary`,
      info.parameters >= 1e6 ? `${(info.parameters / 1e6).toFixed(1)}M parameters`
        : `${Math.round(info.parameters / 1e3)}k parameters`];
    if (valid) parts.push(`valid perplexity ${valid.valid_perplexity.toFixed(1)}, ` +
      `${valid.valid_bits_per_char.toFixed(2)} bits/char`);
    run.append(" · " + parts.join(" · "));
    $("length").max = info.limits.length;
    $("num_samples").max = info.limits.num_samples;
    $("prompt").maxLength = info.limits.prompt_chars;
    $("context").maxLength = info.limits.context_chars;
    showContextCount();
    $("reset").onclick = () => { applyDefaults(info.defaults); saveSettings(); };
    if (!localStorage.getItem(STORE)) applyDefaults(info.defaults);
  } catch (e) {
    $("run").textContent = "could not read /info: is the server running?";
  }
}

function request() {
  const body = {};
  for (const id of CONTROLS) {
    const raw = $(id).value.trim();
    if (raw === "") continue; // left empty: the server's default (a random seed, no acrostic)
    body[id] = NUMBERS.has(id) ? Number(raw) : raw;
  }
  const text = $("prompt").value;
  if ($("multi").checked) {
    body.prompts = text.split("\n").map((line) => line.trim()).filter((line) => line);
    if (body.prompts.length === 0) delete body.prompts;
  } else if (text.trim()) {
    body.prompt = text.trim();
  }
  if ($("context").value.trim()) {
    body.context = $("context").value;
  } else {
    delete body.adapt; // it only says how to read a context
  }
  return body;
}

function makeCards(rows) {
  const output = $("output");
  output.textContent = "";
  output.classList.toggle("many", rows.length > 1);
  return rows.map((row) => {
    const card = document.createElement("article");
    card.className = "sample";
    card.dataset.state = "writing";
    const head = document.createElement("header");
    head.textContent = rows.length > 1 ? `sample ${row.row + 1}` : "";
    const text = document.createElement("p");
    text.className = "text";
    const prompt = document.createElement("span");
    prompt.className = "prompt";
    prompt.textContent = row.prompt;
    const written = document.createElement("span");
    written.className = "written";
    text.append(prompt, written);
    const foot = document.createElement("footer");
    card.append(head, text, foot);
    output.append(card);
    return { card, written, foot };
  });
}

function finishCards(cards, done) {
  cards.forEach((c, i) => {
    c.card.dataset.state = "done";
    const chars = document.createElement("span");
    chars.textContent = `${done.texts[i].length} characters`;
    const copy = document.createElement("button");
    copy.type = "button";
    copy.textContent = "Copy";
    copy.onclick = () => navigator.clipboard && navigator.clipboard.writeText(done.texts[i]);
    c.foot.append(chars, copy);
  });
}

function seedLink(seed) {
  const link = document.createElement("button");
  link.type = "button";
  link.className = "link";
  link.textContent = `seed ${seed}`;
  link.title = "write with this seed again";
  link.onclick = () => { $("seed").value = String(seed); saveSettings(); };
  return link;
}

async function generate() {
  if (running) return;
  showError("");
  saveSettings();
  const controller = new AbortController();
  running = controller;
  setState("writing");
  const body = request();
  $("status").textContent = body.context ? "reading the context…" : "writing…";
  const started = performance.now();
  let cards = [];
  let characters = 0;
  try {
    const response = await fetch("/generate/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ detail: response.statusText }));
      throw new Error(typeof problem.detail === "string" ? problem.detail : JSON.stringify(problem.detail));
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.event === "start") {
          cards = makeCards(event.rows);
        } else if (event.event === "text") {
          cards[event.row].written.append(event.text);
          characters += event.text.length;
          const seconds = (performance.now() - started) / 1000;
          $("status").textContent = `writing… ${characters} characters, ${(characters / seconds).toFixed(0)}/s`;
        } else if (event.event === "done") {
          finishCards(cards, event);
          $("status").textContent = `${characters} characters in ${event.seconds.toFixed(2)} s · `;
          $("status").append(seedLink(event.seed));
        } else if (event.event === "error") {
          throw new Error(event.detail);
        }
      }
    }
  } catch (err) {
    if (err.name === "AbortError") {
      $("status").textContent = `stopped after ${characters} characters`;
    } else {
      showError(err.message);
      $("status").textContent = "";
    }
    cards.forEach((c) => { c.card.dataset.state = "stopped"; });
  } finally {
    running = null;
    setState("idle");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  loadSettings();
  loadInfo();
  $("form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  $("stop").addEventListener("click", () => running && running.abort());
  for (const id of ["prompt", "context"]) {
    $(id).addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
    });
  }
  $("context").addEventListener("input", () => { showContextCount(); saveSettings(); });
  for (const id of CONTROLS) $(id).addEventListener("input", () => { showValues(); saveSettings(); });
  $("multi").addEventListener("change", saveSettings);
  setState("idle");
});
