// The dashboard's script: sign in, refresh the overview every few seconds, and send the
// buttons' stage changes to the admin API (confirmed first; a refusal shows its reasons).
"use strict";

const REFRESH_MS = 3000;

function notice(text, kind) {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = "";
  box.className = kind;
  for (const line of text.split("\n")) {
    const p = document.createElement("p");
    p.textContent = line;
    box.appendChild(p);
  }
  box.hidden = false;
}

async function refresh() {
  const main = document.getElementById("live");
  if (!main) return;
  const answer = await fetch(location.pathname, { headers: { "x-strangler-part": "main" } });
  if (answer.status === 401) {
    location.reload();
    return;
  }
  if (!answer.ok) return;
  const html = await answer.text();
  const next = new DOMParser().parseFromString(html, "text/html").getElementById("live");
  if (next) main.replaceWith(next);
}

function liveRefresh() {
  const main = document.getElementById("live");
  if (!main || main.dataset.live !== "overview") return;
  setInterval(() => {
    // Leave the page alone while someone types a canary percent.
    const active = document.activeElement;
    if (active && active.tagName === "INPUT") return;
    refresh().catch(() => {});
  }, REFRESH_MS);
}

function bodyFor(move, controls) {
  const actor = document.body.dataset.actor;
  switch (move) {
    case "rollback":
      return { url: "rollback", body: { actor }, words: "roll back to legacy" };
    case "canary": {
      const input = controls.querySelector("input.percent");
      const percent = Number(input ? input.value : NaN);
      return { url: "stage", body: { stage: "canary", percent, actor }, words: `send ${percent} % to the new service (canary)` };
    }
    case "cutover":
      return { url: "stage", body: { stage: "cutover", actor }, words: "cut over to the new service" };
    default:
      return { url: "stage", body: { stage: move, actor }, words: move };
  }
}

async function act(button) {
  const controls = button.closest(".controls");
  const route = controls.dataset.route;
  const move = bodyFor(button.dataset.move, controls);
  if (!window.confirm(`${route}: ${move.words}?`)) return;
  button.disabled = true;
  try {
    const answer = await fetch(`/admin/routes/${encodeURIComponent(route)}/${move.url}`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-strangler-dashboard": "1" },
      body: JSON.stringify(move.body),
    });
    const result = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      const error = result.error || {};
      const reasons = (error.reasons || []).map((r) => `• ${r}`).join("\n");
      notice(`${route}: refused (${answer.status}): ${error.message || "no reason given"}${reasons ? "\n" + reasons : ""}`, "refused");
      return;
    }
    const text = result.changed
      ? `${route}: ${result.from} → ${result.to} (generation ${result.generation}; ${result.applied.length} proxies serve it${result.pending.length ? `, ${result.pending.length} pending` : ""})`
      : `${route}: already ${result.stage}`;
    notice(text, "done");
    await refresh();
  } catch (err) {
    notice(`${route}: ${err}`, "refused");
  } finally {
    button.disabled = false;
  }
}

function signIn() {
  const form = document.getElementById("login");
  if (!form) return;
  const token = document.getElementById("token");
  const actor = document.getElementById("actor-name");
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    token.value = fragment.get("token");
    if (fragment.get("actor")) actor.value = fragment.get("actor");
    history.replaceState(null, "", location.pathname + location.search);
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await fetch("/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: token.value, actor: actor.value }),
    });
    if (answer.ok) {
      location.reload();
      return;
    }
    const result = await answer.json().catch(() => ({}));
    const box = document.getElementById("login-error");
    box.textContent = (result.error && result.error.message) || `sign-in failed (${answer.status})`;
    box.hidden = false;
  });
  if (token.value && actor.value) form.requestSubmit();
}

document.addEventListener("DOMContentLoaded", () => {
  signIn();
  liveRefresh();
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.act");
    if (button) act(button);
  });
  const logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", async () => {
      await fetch("/logout", { method: "POST" });
      location.href = "/";
    });
  }
});
