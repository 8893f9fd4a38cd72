// The signed-in page's small API playground: same-origin calls through tobira's proxy.
// The browser never sees the token; tobira adds it.
"use strict";
(function () {
  const form = document.getElementById("playground");
  if (!form) return;
  const output = document.getElementById("playground-output");
  // tobira's path prefix, when it lives under one (`<body data-base="/misskey">`); "" at the root.
  const BASE = document.body.dataset.base || "";
  // JSON indented, so that it reads on a phone too; anything else as it came.
  function readable(text) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2).slice(0, 20000);
    } catch (error) {
      return text.slice(0, 2000);
    }
  }
  async function call(endpoint, body) {
    const answer = await fetch(BASE + "/api/" + endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    output.textContent = answer.status + " " + readable(await answer.text());
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = form.elements.namedItem("text").value;
    call("notes/create", { text: text }).catch(function (error) { output.textContent = String(error); });
  });
  document.getElementById("playground-timeline").addEventListener("click", function () {
    call("notes/timeline", { limit: 5 }).catch(function (error) { output.textContent = String(error); });
  });
})();
