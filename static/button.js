// <tobira-button>: the "Sign in with Misskey" button for any site, on any origin. It renders a real link
// that takes the whole window to the tobira this script was loaded from, where the sign-in starts.
//
//   <link rel="stylesheet" href="https://TOBIRA/static/button.css">
//   <script src="https://TOBIRA/static/button.js" defer></script>
//   <tobira-button theme="auto" size="medium">
//     <a class="tobira-button" href="https://TOBIRA/login">Sign in with Misskey</a>
//   </tobira-button>
//
// Attributes: theme (light, dark, auto), size (small, medium, large), label (your own wording; by default
// the visitor's language), instance (a server to go straight to, skipping tobira's form), return-to (a
// path on tobira to come back to). The link inside is the no-JavaScript fallback; the page-level
// stylesheet is optional and only makes that fallback look like the button.
//
// Everything lives in the element's shadow root: no styles or scripts are added to the host page and
// nothing is written as HTML, so pages with a strict Content-Security-Policy or Trusted Types can use it.
// Styling hook: `tobira-button::part(button)`.
"use strict";
(() => {
  // tobira is wherever this script came from, so the snippet needs no configuration. currentScript is set
  // only while a classic script first runs; the selector covers the rest (e.g. `type="module"`).
  const script = document.currentScript || document.querySelector('script[src*="/static/button.js"]');
  if (!script || customElements.get("tobira-button")) return;
  const LOGIN = new URL("../login", script.src);
  const STYLES = new URL("button.css", script.src);

  const LABELS = new Map([
    ["en", "Sign in with Misskey"],
    ["ja", "Misskeyでログイン"],
    ["fr", "Se connecter avec Misskey"],
    ["ko", "Misskey로 로그인"],
    ["zh", "使用 Misskey 登录"],
    ["zh-Hant", "使用 Misskey 登入"],
  ]);

  /** The first of the visitor's languages we have words for: [language tag, label]. */
  function defaultLabel() {
    for (const tag of navigator.languages || [navigator.language]) {
      const lower = tag.toLowerCase();
      const language = /^zh-(hant|tw|hk|mo)\b/.test(lower) ? "zh-Hant" : lower.split("-")[0];
      if (LABELS.has(language)) return [language, LABELS.get(language)];
    }
    return ["en", LABELS.get("en")];
  }

  function svg(tag, attributes) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  /** A Misskey-ish mark: a rounded "M" on Misskey's green. Decorative: the label names the link. */
  function mark() {
    // width/height keep it icon-sized should the stylesheet never arrive.
    const icon = svg("svg", { class: "mark", viewBox: "0 0 24 24", width: "24", height: "24" });
    icon.setAttribute("aria-hidden", "true");
    icon.setAttribute("focusable", "false");
    icon.append(
      svg("rect", { width: "24", height: "24", rx: "6", fill: "#86b300" }),
      svg("path", {
        d: "M6.5 16.5v-9l5.5 6 5.5-6v9",
        fill: "none",
        stroke: "#fff",
        "stroke-width": "2.4",
        "stroke-linecap": "round",
        "stroke-linejoin": "round",
      }),
    );
    return icon;
  }

  class TobiraButton extends HTMLElement {
    static observedAttributes = ["instance", "return-to", "label"];
    #link = document.createElement("a");
    #label = document.createElement("span");

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      const styles = document.createElement("link");
      styles.rel = "stylesheet";
      styles.href = STYLES.href;
      // Until the styles arrive, the site's own fallback link shows through the slot, so the button never
      // flashes unstyled. If they never arrive (the page's policy refused them) the plain link still works.
      const fallback = document.createElement("slot");
      root.append(styles, fallback);
      const enhance = () => fallback.replaceWith(this.#link);
      styles.addEventListener("load", enhance, { once: true });
      styles.addEventListener("error", enhance, { once: true });

      this.#link.className = "tobira-button";
      this.#link.setAttribute("part", "button");
      // tobira refuses to be framed, so from inside an iframe the sign-in must take the whole window.
      this.#link.target = "_top";
      this.#label.className = "label";
      this.#link.append(mark(), this.#label);
      this.#render();
    }

    attributeChangedCallback() {
      this.#render();
    }

    #render() {
      const url = new URL(LOGIN);
      const instance = this.getAttribute("instance")?.trim();
      if (instance) url.searchParams.set("instance", instance);
      const returnTo = this.getAttribute("return-to")?.trim();
      if (returnTo) url.searchParams.set("return_to", returnTo);
      this.#link.href = url.href;

      const label = this.getAttribute("label")?.trim();
      if (label) {
        // The site's own words are in the page's language, which the shadow tree inherits.
        this.#label.textContent = label;
        this.#link.removeAttribute("lang");
      } else {
        const [language, text] = defaultLabel();
        this.#label.textContent = text;
        this.#link.lang = language;
      }
    }
  }

  customElements.define("tobira-button", TobiraButton);
})();
