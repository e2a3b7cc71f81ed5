// Collections: the list (size, model, index type) and one collection's page with its
// uncertainty histogram and its most certain and most uncertain items, side by side.

import { clear, fmt, h } from "./dom.js";
import { linkedVisual } from "./links.js";
import { routeHref } from "./router.js";
import { collectionStats, collections, percentileFromHistogram } from "./state.js";
import { histogram, inlineError, itemNote, noUncertaintyNote, uncertaintyMeter } from "./widgets.js";

export function renderList(main) {
  const body = h("div", { "aria-busy": "true" }, h("p", { class: "muted" }, "Loading collections…"));
  clear(main).append(
    h("section", { class: "view view-collections" }, h("h1", { tabindex: "-1" }, "Collections"), body),
  );
  collections({ refresh: true })
    .then((list) => {
      body.removeAttribute("aria-busy");
      if (!list.length) {
        body.replaceChildren(
          h("p", {}, "No collections yet. Index one from the ", h("a", { href: "#/jobs" }, "Jobs"), " page."),
        );
        return;
      }
      body.replaceChildren(
        h(
          "div",
          { class: "table-scroll" },
          h(
            "table",
            { class: "collections-table" },
            h("caption", { class: "sr-only" }, "Indexed collections"),
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["Name", "Holds", "Items", "Family", "Model", "Index", "Dim"].map((t) => h("th", { scope: "col" }, t)),
              ),
            ),
            h(
              "tbody",
              {},
              list.map((c) =>
                h(
                  "tr",
                  {},
                  h("th", { scope: "row" }, h("a", { href: routeHref("collections", { name: c.name }) }, c.name)),
                  h("td", {}, c.modality === "image" ? "images" : "texts"),
                  h("td", { class: "num" }, c.size.toLocaleString()),
                  h(
                    "td",
                    { title: c.deterministic ? "deterministic: points, no uncertainty" : null },
                    c.family ? `${c.family}${c.deterministic ? " (no uncertainty)" : ""}` : "–",
                  ),
                  h("td", { class: "mono" }, c.model || "–"),
                  h("td", {}, c.indexType || "–"),
                  h("td", { class: "num" }, c.dim ?? "–"),
                ),
              ),
            ),
          ),
        ),
      );
    })
    .catch((error) => {
      body.removeAttribute("aria-busy");
      body.replaceChildren(inlineError(error));
    });
}

export function renderDetail(main, params) {
  const name = params.name;
  const body = h("div", { "aria-busy": "true" }, h("p", { class: "muted" }, "Loading statistics…"));
  clear(main).append(
    h(
      "section",
      { class: "view view-collection" },
      h("p", { class: "breadcrumb" }, h("a", { href: "#/collections" }, "Collections"), " / "),
      h("h1", { tabindex: "-1" }, name),
      body,
    ),
  );
  collectionStats(name, { refresh: true })
    .then((stats) => {
      body.removeAttribute("aria-busy");
      if (stats.deterministic) {
        body.replaceChildren(
          h(
            "dl",
            { class: "facts" },
            fact("Items", stats.size.toLocaleString()),
            fact("Holds", stats.modality === "image" ? "images" : "texts"),
            fact("Family", stats.family || "–"),
            fact("Model", stats.model || "–"),
            fact("Index", stats.indexType || "–"),
            fact("Dimension", stats.dim ?? "–"),
          ),
          h(
            "section",
            { class: "panel", "aria-labelledby": "hist-h" },
            h("h2", { id: "hist-h" }, "Uncertainty"),
            noUncertaintyNote(stats.family),
          ),
        );
        return;
      }
      body.replaceChildren(
        h(
          "div",
          { class: "collection-top" },
          h(
            "dl",
            { class: "facts" },
            fact("Items", stats.size.toLocaleString()),
            fact("Holds", stats.modality === "image" ? "images" : "texts"),
            fact("Family", stats.family || "–"),
            fact("Model", stats.model || "–"),
            fact("Index", stats.indexType || "–"),
            fact("Dimension", stats.dim ?? "–"),
            stats.uncertainty
              ? fact(
                  "Uncertainty",
                  `median ${fmt(stats.uncertainty.median)}, range ${fmt(stats.uncertainty.min)} – ${fmt(stats.uncertainty.max)}`,
                )
              : null,
          ),
          h(
            "section",
            { class: "panel", "aria-labelledby": "hist-h" },
            h("h2", { id: "hist-h" }, "Uncertainty"),
            histogram(stats.histogram, { title: `Uncertainty of the items in ${name}`, scale: stats.histogramScale }),
            h(
              "p",
              { class: "hint" },
              "Σσ² of each item's Gaussian embedding. Low: the model is sure what the item is. ",
              "High: the item is general, ambiguous or hard to read.",
            ),
          ),
        ),
        h(
          "div",
          { class: "extremes" },
          extremes("Most certain", "certain", stats.mostCertain, name, stats),
          extremes("Most uncertain", "uncertain", stats.mostUncertain, name, stats),
        ),
      );
    })
    .catch((error) => {
      body.removeAttribute("aria-busy");
      body.replaceChildren(
        inlineError(error),
        h("p", {}, h("a", { href: "#/collections" }, "Back to the collections")),
      );
    });
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

function extremes(title, key, items, name, stats) {
  const headingId = `extreme-${key}`;
  return h(
    "section",
    { class: `panel extreme ${key}`, "aria-labelledby": headingId },
    h("h2", { id: headingId }, title),
    items.length
      ? h(
          "ol",
          { class: "extreme-list" },
          items.map((item) =>
            h(
              "li",
              { class: "extreme-item" },
              linkedVisual(name, item, stats.modality),
              itemNote(item),
              uncertaintyMeter(
                item.uncertainty,
                item.percentile ?? percentileFromHistogram(stats.histogram, item.uncertainty),
                { compact: true },
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No items."),
  );
}
