// The signed-in page's small API playground: same-origin calls through tobira's proxy.
// The browser never sees the token; tobira adds it.
"use strict";
(function () {
  const form = document.getElementById("playground");
  if (!form) return;
  const output = document.getElementById("playground-output");
  async function call(endpoint, body) {
    const answer = await fetch("/api/" + endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await answer.text();
    output.textContent = answer.status + " " + text.slice(0, 2000);
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
