// The mushroom chat in a browser: posts to this site's /web/ endpoints and draws the core's replies.
// Every text goes into the page as text (textContent), never as HTML: answers, file names and
// questions can hold anything.
"use strict";

const chat = document.getElementById("chat");
const photoForm = document.getElementById("photo-form");
const photoInput = document.getElementById("photos");
const previews = document.getElementById("previews");
const identifyButton = document.getElementById("identify");
const askForm = document.getElementById("ask-form");
const question = document.getElementById("question");
const MAX_PHOTOS = 6;
let chosen = [];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function show(node) {
  chat.appendChild(node);
  node.scrollIntoView({ block: "end", behavior: "smooth" });
  return node;
}

async function post(url, body) {
  const headers = { "X-Mushroom-Web": "1" };
  if (!(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(body);
  }
  const response = await fetch(url, { method: "POST", body, headers, credentials: "same-origin" });
  let payload = {};
  try { payload = await response.json(); } catch (e) { /* not JSON: use the status below */ }
  if (!response.ok) {
    throw new Error(payload.detail || `Something went wrong (HTTP ${response.status}). Please try again.`);
  }
  return payload.replies || [];
}

function percent(p) {
  const value = 100 * p;
  return value > 0 && value < 1 ? "<1%" : `${Math.round(value)}%`;
}

function identificationCard(card) {
  const box = el("div", "card");
  const badge = el("p");
  badge.appendChild(el("span", `badge ${card.verdict}`, card.verdict_text));
  box.appendChild(badge);
  if (card.dangerous.length) {
    box.appendChild(el("p", null, "Dangerous species a photo can't rule out:"));
    const list = el("ul", "candidates");
    for (const d of card.dangerous) {
      const item = el("li", d.verdict, `${d.name} — ${d.verdict.toUpperCase()}`);
      list.appendChild(item);
    }
    box.appendChild(list);
  }
  if (card.top.length) {
    box.appendChild(el("p", null, card.reliable ? "Most likely:" : "Best guesses (not reliable):"));
    for (const guess of card.top) {
      const row = el("div", "guess");
      const id = `g${Math.random().toString(36).slice(2)}`;
      const name = el("label", null, guess.name);
      name.htmlFor = id;
      row.appendChild(name);
      row.appendChild(el("span", "p", percent(guess.probability)));
      const bar = el("progress");
      bar.id = id;
      bar.max = 1;
      bar.value = guess.probability;
      row.appendChild(bar);
      box.appendChild(row);
    }
  }
  for (const [title, items] of [["Check in the field", card.checks], ["Deadly or poisonous lookalikes", card.lookalikes]]) {
    if (!items.length) continue;
    const details = el("details");
    details.appendChild(el("summary", null, title));
    const list = el("ul");
    for (const item of items) list.appendChild(el("li", null, item));
    details.appendChild(list);
    box.appendChild(details);
  }
  for (const note of card.notes) box.appendChild(el("p", "note", note));
  box.appendChild(el("p", "never", card.warning));
  return box;
}

function citations(list) {
  const details = el("details", "sources");
  details.appendChild(el("summary", null, `Sources (${list.length})`));
  const items = el("ul");
  for (const c of list) {
    const item = el("li");
    item.appendChild(el("strong", null, c.title || c.source));
    if (c.excerpt) item.appendChild(el("span", null, ` — ${c.excerpt}`));
    items.appendChild(item);
  }
  details.appendChild(items);
  return details;
}

function showReplies(replies) {
  for (const reply of replies) {
    const box = el("div", "msg bot");
    const data = reply.data || {};
    if (data.identification) {
      box.appendChild(identificationCard(data.identification));
    } else {
      box.appendChild(el("p", null, reply.text));
    }
    if (data.citations && data.citations.length) box.appendChild(citations(data.citations));
    if (reply.buttons.length) {
      const row = el("div", "buttons");
      for (const b of reply.buttons) {
        const button = el("button", null, b.label);
        button.type = "button";
        button.addEventListener("click", () => send({ button: b.payload }, b.label));
        row.appendChild(button);
      }
      box.appendChild(row);
    }
    show(box);
  }
}

function showError(message) {
  const box = el("div", "msg bot error");
  box.setAttribute("role", "alert");
  box.appendChild(el("p", null, message));
  show(box);
}

async function run(userText, request) {
  show(el("div", "msg user")).appendChild(el("p", null, userText));
  const busy = show(el("p", "busy", "Working…"));
  chat.setAttribute("aria-busy", "true");
  try {
    showReplies(await request());
  } catch (error) {
    showError(error.message);
  } finally {
    busy.remove();
    chat.removeAttribute("aria-busy");
  }
}

function send(body, label) {
  return run(label, () => post("/web/message", body));
}

photoInput.addEventListener("change", () => {
  chosen = chosen.concat(Array.from(photoInput.files)).slice(0, MAX_PHOTOS);
  photoInput.value = "";
  previews.replaceChildren();
  for (const file of chosen) {
    const item = el("li");
    const image = el("img");
    image.src = URL.createObjectURL(file);
    image.alt = file.name;
    item.appendChild(image);
    previews.appendChild(item);
  }
  identifyButton.disabled = chosen.length === 0;
  identifyButton.textContent = chosen.length > 1 ? `Identify (${chosen.length} photos)` : "Identify";
});

photoForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!chosen.length) return;
  const form = new FormData();
  for (const file of chosen) form.append("image", file, file.name);
  const label = chosen.length > 1 ? `[${chosen.length} photos]` : `[photo: ${chosen[0].name}]`;
  chosen = [];
  previews.replaceChildren();
  identifyButton.disabled = true;
  identifyButton.textContent = "Identify";
  run(label, () => post("/web/photo", form));
});

askForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = question.value.trim();
  if (!text) {
    showError("Please type a question, for example: is it poisonous?");
    return;
  }
  question.value = "";
  send({ text }, text);
});
