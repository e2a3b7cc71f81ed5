// Item view (#/item?c=COLLECTION&id=ID): one indexed item at full size, with its metadata and its
// uncertainty, what matches it in the other modality (the captions of an image, the images of a
// caption), its nearest items of its own kind, and the ways on: find similar, traverse.

import * as api from "./api.js";
import { clear, fmt, h } from "./dom.js";
import { routeHref } from "./router.js";
import { itemHref, linkedVisual, similarHref } from "./links.js";
import { collections } from "./state.js";
import {
  inlineError,
  itemNote,
  itemVisual,
  noUncertaintyNote,
  probabilityMeter,
  uncertaintyMeter,
  webAddress,
} from "./widgets.js";

const MATCHES = 8; // captions (or images) that match the item
const NEIGHBOURS = 6; // similar items of its own kind

export function render(main, params) {
  const name = params.c || "";
  const id = params.id || "";
  const body = h("div", { "aria-busy": "true" }, h("p", { class: "muted" }, "Loading the item…"));
  const crumbs = h(
    "p",
    { class: "breadcrumb" },
    h("a", { href: "#/collections" }, "Collections"),
    " / ",
    name ? h("a", { href: routeHref("collections", { name }) }, name) : null,
    name ? " /" : null,
  );
  clear(main).append(
    h("section", { class: "view view-item" }, crumbs, h("h1", { tabindex: "-1", class: "item-title" }, id || "Item"), body),
  );
  if (!name || !id) {
    body.removeAttribute("aria-busy");
    body.replaceChildren(
      inlineError(new Error("No item chosen: open one from a search result or a collection page.")),
      h("p", {}, h("a", { href: "#/collections" }, "Back to the collections")),
    );
    return undefined;
  }
  const controller = new AbortController();

  Promise.all([api.item(name, id), collections()])
    .then(([raw, list]) => {
      const item = api.normaliseItem(raw);
      const info = list.find((c) => c.name === name) || { name, modality: item.modality };
      body.removeAttribute("aria-busy");
      body.replaceChildren(...layout(item, info, list, controller.signal));
    })
    .catch((error) => {
      body.removeAttribute("aria-busy");
      body.replaceChildren(inlineError(error), h("p", {}, h("a", { href: "#/collections" }, "Back to the collections")));
    });
  return () => controller.abort();
}

function layout(item, info, list, signal) {
  const image = item.modality === "image";
  const points = item.uncertainty === null; // a deterministic model's item: no uncertainty, nothing to traverse
  const other = list.find((c) => c.modality !== item.modality && c.size > 0);
  const actions = h(
    "div",
    { class: "card-actions" },
    h("a", { href: similarHref(info.name, item.id), class: "button" }, "Find similar"),
    image && !points
      ? h("a", { href: routeHref("traverse", { from: info.name, id: item.id }), class: "button" }, "Traverse")
      : null,
  );
  const top = h(
    "div",
    { class: "item-top" },
    h(
      "figure",
      { class: "item-figure" },
      image ? fullImage(info.name, item) : h("blockquote", { class: "item-full-text" }, item.text ?? item.id),
      itemNote(item),
    ),
    h(
      "div",
      { class: "item-facts" },
      h(
        "dl",
        { class: "facts" },
        fact("Collection", h("a", { href: routeHref("collections", { name: info.name }) }, info.name)),
        fact("Holds", image ? "images" : "texts"),
        fact("Id", h("span", { class: "mono" }, item.id)),
      ),
      points ? noUncertaintyNote(null) : uncertaintyMeter(item.uncertainty, item.percentile, { collection: info.name }),
      points
        ? null
        : h(
            "p",
            { class: "hint" },
            "Σσ² of the item's Gaussian: low when the model is sure what it is, high when it is general, ambiguous ",
            "or hard to read.",
          ),
      actions,
    ),
  );
  const sections = [top, metadataPanel(item.metadata)];
  if (other) sections.push(matchesPanel(item, info, other, signal));
  sections.push(neighboursPanel(item, info, signal));
  return sections;
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

/** The image at full size (fetched with the API key when the service wants one). */
function fullImage(collectionName, item) {
  if (webAddress(item)) {
    // indexed from a URL: no stored copy; shown from the web as result cards show it (when allowed)
    const web = itemVisual(collectionName, item, "image");
    web.classList.add("full-image");
    return web;
  }
  const img = h("img", { class: "full-image", alt: item.caption || `image ${item.id}`, decoding: "async" });
  const missing = () => img.replaceWith(h("p", { class: "thumb missing full-image" }, "image unavailable"));
  img.addEventListener("error", missing);
  if (api.apiKey()) {
    api
      .itemImageObjectUrl(collectionName, item.id)
      .then((objectUrl) => {
        img.addEventListener("load", () => URL.revokeObjectURL(objectUrl), { once: true });
        img.src = objectUrl;
      })
      .catch(missing);
  } else {
    img.src = api.itemImageUrl(collectionName, item.id);
  }
  return img;
}

function metadataPanel(metadata) {
  const entries = Object.entries(metadata || {});
  return h(
    "section",
    { class: "panel", "aria-labelledby": "meta-h" },
    h("h2", { id: "meta-h" }, "Metadata"),
    entries.length
      ? h(
          "div",
          { class: "table-scroll" },
          h(
            "table",
            { class: "metadata-table" },
            h("caption", { class: "sr-only" }, "The item's metadata"),
            h(
              "tbody",
              {},
              entries.map(([key, value]) =>
                h("tr", { dataset: { key } }, h("th", { scope: "row" }, key), h("td", {}, metadataValue(value))),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "This item has no metadata."),
  );
}

function metadataValue(value) {
  if (value === null || value === undefined) return "–";
  if (Array.isArray(value) && value.every((v) => typeof v !== "object" || v === null)) {
    return h(
      "ul",
      { class: "metadata-list" },
      value.map((v) => h("li", {}, String(v))),
    );
  }
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

/** The other modality's items that match this one: an image's captions, a caption's images. */
function matchesPanel(item, info, other, signal) {
  const image = item.modality === "image";
  const title = image ? `Captions that match it (${other.name})` : `Images it describes (${other.name})`;
  const list = h("ol", { class: image ? "match-list" : "results compact" }, h("li", { class: "muted" }, "Searching…"));
  const how = h("p", { class: "hint" });
  const panel = h(
    "section",
    { class: "panel matches", "aria-labelledby": "match-h" },
    h("h2", { id: "match-h" }, title),
    how,
    list,
  );
  const search = (rank) =>
    api.searchItem({ itemCollection: info.name, itemId: item.id, collection: other.name, k: MATCHES, rank, signal });
  // most probably true first when the model has a calibrator, else by CSD
  search("probability")
    .catch((error) => (error.code === "not_calibrated" ? search("csd") : Promise.reject(error)))
    .then((raw) => {
      const response = api.normaliseSearch(raw);
      how.textContent =
        response.rank === "probability"
          ? "Most likely true of it first (calibrated probability)."
          : "Closest first (CSD); the model has no calibrated probability.";
      clear(list);
      if (!response.results.length) list.append(h("li", { class: "muted" }, "Nothing matches."));
      for (const hit of response.results) {
        list.append(
          image
            ? h(
                "li",
                { class: "match", dataset: { id: hit.id } },
                h("a", { href: itemHref(other.name, hit.id), class: "match-text" }, hit.text ?? hit.id),
                probabilityMeter(hit.probability),
                hit.uncertainty === null ? null : uncertaintyMeter(hit.uncertainty, null, { compact: true }),
              )
            : h(
                "li",
                { class: "result-card", dataset: { id: hit.id } },
                linkedVisual(other.name, hit, "image"),
                probabilityMeter(hit.probability),
              ),
        );
      }
    })
    .catch((error) => {
      if (error.name !== "AbortError") list.replaceChildren(h("li", {}, inlineError(error)));
    });
  return panel;
}

/** Its nearest items of its own kind, near-duplicates folded; the whole list is one click on. */
function neighboursPanel(item, info, signal) {
  const list = h("ol", { class: "results compact" }, h("li", { class: "muted" }, "Searching…"));
  const panel = h(
    "section",
    { class: "panel neighbours", "aria-labelledby": "similar-h" },
    h("h2", { id: "similar-h" }, "Similar items"),
    list,
    h("p", {}, h("a", { href: similarHref(info.name, item.id) }, "All similar items in the search page →")),
  );
  api
    .searchItem({
      itemCollection: info.name,
      itemId: item.id,
      collection: info.name,
      k: NEIGHBOURS,
      rank: "csd",
      collapse: true,
      signal,
    })
    .then((raw) => {
      const response = api.normaliseSearch(raw);
      clear(list);
      if (!response.results.length) list.append(h("li", { class: "muted" }, "No other items."));
      for (const hit of response.results) {
        list.append(
          h(
            "li",
            { class: "result-card", dataset: { id: hit.id } },
            linkedVisual(info.name, hit, item.modality),
            h("p", { class: "muted small" }, `CSD ${fmt(hit.csd)}`),
            hit.duplicates.length ? h("p", { class: "duplicates" }, `+ ${hit.duplicates.length} similar hidden`) : null,
          ),
        );
      }
    })
    .catch((error) => {
      if (error.name !== "AbortError") list.replaceChildren(h("li", {}, inlineError(error)));
    });
  return panel;
}
