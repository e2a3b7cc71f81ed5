// Hash routing: "#/search?mode=text&q=red+circle" -> {name: "search", params: {...}}.
// The URL holds every view's state that can be written down, so reload, back and sharing work.

export function parseRoute(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(query));
  const name = parts[0] || "search";
  if (parts.length > 1) params.name = parts.slice(1).join("/");
  return { name, params };
}

export function routeHref(name, params = {}) {
  const { name: sub, ...rest } = params;
  const path = sub ? `${name}/${encodeURIComponent(sub)}` : name;
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(rest)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const tail = query.toString();
  return `#/${path}${tail ? `?${tail}` : ""}`;
}

let shown = null; // the hash the page currently shows (set by renders and by silent navigations)

/** True once per new hash: hashchange and popstate both fire for one change, render once. */
export function takeNewHash() {
  if (shown !== null && location.hash === shown) return false;
  shown = location.hash;
  return true;
}

/** Go to a route. silent: record it in history without re-rendering the current view. */
export function navigate(href, { silent = false } = {}) {
  if (href === location.hash) return;
  if (silent) {
    history.pushState(null, "", href);
    shown = location.hash;
    return;
  }
  location.hash = href;
}
