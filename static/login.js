// The sign-in form's helpers. The form works without this script; it only adds, before the form is sent:
// - the server as tobira sees it (name, icon, software), asked from /lookup while the person types, and the
//   requested permissions it does not offer, in the words the form's own permission list uses;
// Translated texts come from the page (data-* attributes), so this file needs no catalogue of its own.
"use strict";
(function () {
  const form = document.getElementById("login-form");
  const input = document.getElementById("instance");
  const preview = document.getElementById("server-preview");
  if (!form || !input || !preview) return;
  const words = preview.dataset;
  const DELAY_MS = 400;
  // tobira's path prefix, when it lives under one (`<body data-base="/misskey">`); "" at the root.
  const BASE = document.body.dataset.base || "";
  const answers = new Map(); // typed value → {ok, body}: each value is asked once per page
  let timer = 0;
  let controller = null;
  let shownFor = "";
  // An error page repeats the form with what was typed: its error is already shown above, so the lookup of
  // that same text shows only a server it found, never the error a second time.
  const pageError = document.querySelector("[role=alert]") ? input.value.trim() : null;

  // Only what could be a complete name: a dot or a port, no spaces, not ending mid-name.
  function worthAsking(value) {
    return value.length >= 3 && value.length <= 300 && /[.:]/.test(value) && !/[\s]/.test(value) && !/[.:@-]$/.test(value);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function show(...nodes) {
    preview.replaceChildren(...nodes);
  }

  function showServer(info) {
    const card = element("div", "server");
    if (typeof info.iconUrl === "string" && /^https?:\/\//.test(info.iconUrl)) {
      const icon = element("img");
      icon.alt = "";
      icon.width = 40;
      icon.height = 40;
      icon.referrerPolicy = "no-referrer";
      icon.addEventListener("error", function () { icon.remove(); });
      icon.src = info.iconUrl;
      card.append(icon);
    }
    const text = element("div");
    text.append(element("div", "name", info.name || info.host));
    const software = (info.softwareName || words.compatible) + (info.version ? " " + info.version : "");
    text.append(element("div", "meta", info.host + " · " + software));
    card.append(text);
    const nodes = [card];
    if (info.miauth === false) nodes.push(element("p", "warning", words.noMiauth));
    const missing = Array.isArray(info.missingPermissions) ? info.missingPermissions : [];
    if (missing.length) nodes.push(element("p", "warning", words.missingPermissions), missingList(missing));
    show(...nodes);
  }

  // Each permission in plain words, as the form lists it (its items carry the names); the name otherwise.
  function missingList(names) {
    const sentences = new Map();
    form.querySelectorAll("li[data-permission]").forEach(function (item) {
      sentences.set(item.dataset.permission, item.textContent);
    });
    const list = element("ul", "missing-permissions");
    names.forEach(function (name) {
      list.append(element("li", "", sentences.get(String(name)) || String(name)));
    });
    return list;
  }

  function showAnswer(answer, value) {
    if (answer.ok) {
      showServer(answer.body);
    } else if (value === pageError) {
      show();
    } else if (answer.body && answer.body.error && answer.body.error.message && answer.status !== 429) {
      show(element("p", "hint", answer.body.error.message));
    } else {
      show(element("p", "hint", words.unavailable));
    }
  }

  async function lookUp(value) {
    if (answers.has(value)) {
      shownFor = value;
      showAnswer(answers.get(value), value);
      return;
    }
    if (controller) controller.abort();
    controller = new AbortController();
    show(element("p", "hint", words.checking));
    shownFor = value;
    try {
      const response = await fetch(BASE + "/lookup?instance=" + encodeURIComponent(value), {
        signal: controller.signal,
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      const answer = { ok: response.ok, status: response.status, body: await response.json() };
      if (response.status !== 429) answers.set(value, answer);
      if (input.value.trim() === value) showAnswer(answer, value);
    } catch (error) {
      if (error.name !== "AbortError" && input.value.trim() === value) show(element("p", "hint", words.unavailable));
    }
  }

  function schedule(delay) {
    clearTimeout(timer);
    const value = input.value.trim();
    if (!worthAsking(value)) {
      if (controller) controller.abort();
      shownFor = "";
      show();
      return;
    }
    if (value === shownFor) return;
    timer = setTimeout(function () { lookUp(value); }, delay);
  }

  input.addEventListener("input", function () { schedule(DELAY_MS); });
  try {
    // Earlier versions kept whatever was typed here; the list now comes from successful sign-ins only.
    localStorage.removeItem("tobira.recent");
  } catch (error) {
    // Storage refused (private mode): nothing was kept either.
  }
  schedule(0);
})();
