// Entry point: routes the hash to a view, keeps the nav and the service state line current,
// and makes sure nothing fails silently (uncaught errors become readable messages).

import * as api from "./api.js";
import { h } from "./dom.js";
import * as collectionsView from "./collections.js";
import * as itemView from "./item.js";
import * as jobsView from "./jobs.js";
import { parseRoute, takeNewHash } from "./router.js";
import * as searchView from "./search.js";
import * as traverseView from "./traverse.js";
import { clearErrors, setWebImagesAllowed, showError, WEB_IMAGES_WHY, webImagesAllowed } from "./widgets.js";

const VIEWS = {
  search: (main, params) => searchView.render(main, params),
  traverse: (main, params) => traverseView.render(main, params),
  collections: (main, params) =>
    params.name ? collectionsView.renderDetail(main, params) : collectionsView.renderList(main),
  jobs: (main) => jobsView.render(main),
  item: (main, params) => itemView.render(main, params),
};
const TITLES = { search: "Search", traverse: "Traverse", collections: "Collections", jobs: "Jobs", item: "Item" };
const HEALTH_POLL_MS = 15000;

let cleanup = null;
let firstRender = true;

function renderRoute({ force = false } = {}) {
  if (!takeNewHash() && !force) return;
  const main = document.getElementById("main");
  const { name, params } = parseRoute();
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
  clearErrors();
  const view = VIEWS[name];
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!view) {
    main.replaceChildren(
      h(
        "section",
        { class: "view" },
        h("h1", { tabindex: "-1" }, "Page not found"),
        h("p", {}, "There is no page here. ", h("a", { href: "#/search" }, "Go to search"), "."),
      ),
    );
  } else {
    try {
      cleanup = view(main, params);
    } catch (error) {
      showError(error, "This page failed to load");
    }
  }
  const subject = params.name || (name === "item" && params.id ? `${params.id} (${params.c})` : "");
  document.title = `${TITLES[name] || "Not found"}${subject ? ` · ${subject}` : ""} — ProLIP retrieval`;
  // move focus to the new page's heading for keyboard and screen-reader users, unless the view
  // already focused a field (search focuses its query box)
  if (!firstRender && !main.contains(document.activeElement)) {
    const heading = main.querySelector("h1");
    if (heading) heading.focus({ preventScroll: true });
  }
  firstRender = false;
}

async function watchHealth() {
  const line = document.getElementById("service-state");
  try {
    const ready = await api.health();
    const model = ready && (ready.model_id || ready.model);
    line.textContent = model ? `ready · ${model}` : "ready";
    line.className = "service-state ok";
  } catch (error) {
    line.textContent = error.status === 503 ? `not ready: ${error.message}` : "service unreachable";
    line.className = "service-state bad";
  }
  setTimeout(watchHealth, HEALTH_POLL_MS);
}

function installApiKeyControl() {
  const header = document.querySelector(".site-header");
  const button = h(
    "button",
    { type: "button", class: "small key-button", "aria-haspopup": "dialog" },
    api.apiKey() ? "API key ✓" : "API key",
  );
  button.addEventListener("click", () => {
    const entered = window.prompt("API key for this service (leave empty to clear):", api.apiKey());
    if (entered === null) return;
    api.setApiKey(entered.trim());
    button.textContent = api.apiKey() ? "API key ✓" : "API key";
    renderRoute({ force: true });
  });
  header.append(button);
}

function installWebImagesControl() {
  const header = document.querySelector(".site-header");
  const button = h("button", { type: "button", class: "small key-button", title: WEB_IMAGES_WHY });
  const show = () => {
    const on = webImagesAllowed();
    button.textContent = on ? "Web images: on" : "Web images: off";
    button.setAttribute("aria-pressed", on ? "true" : "false");
  };
  button.addEventListener("click", () => setWebImagesAllowed(!webImagesAllowed()));
  window.addEventListener("prolip:settings", () => {
    show();
    renderRoute({ force: true });
  });
  show();
  header.append(button);
}

window.addEventListener("unhandledrejection", (event) => {
  if (event.reason && event.reason.name === "AbortError") return;
  showError(event.reason, "Unexpected error");
});
window.addEventListener("error", (event) => showError(event.error || event.message, "Unexpected error"));
window.addEventListener("hashchange", () => renderRoute());
window.addEventListener("popstate", () => renderRoute());

installApiKeyControl();
installWebImagesControl();
renderRoute();
watchHealth();
