// Links into the item view and "find similar" searches, shared by the views, and the query box of
// a search by item (mode=item): the item itself, shown as it is.

import * as api from "./api.js";
import { h } from "./dom.js";
import { routeHref } from "./router.js";
import { collections } from "./state.js";
import { inlineError, itemVisual } from "./widgets.js";

const DEFAULT_K = 12;

/**
 * An item's visual (``itemVisual``) as a link to its view; a visual that holds a control of its own (a web
 * image not loaded yet, with its "Show web images" button) stays unlinked, as a button inside a link would
 * follow the link.
 */
export function linkedVisual(collectionName, item, modality) {
  const visual = itemVisual(collectionName, item, modality);
  if (visual.querySelector && visual.querySelector("button, a")) return visual;
  return h("a", { href: itemHref(collectionName, item.id), class: "item-link", title: "Open this item" }, visual);
}

/** The item view of one indexed item. */
export function itemHref(collectionName, itemId) {
  return routeHref("item", { c: collectionName, id: itemId });
}

/** "Find similar": a search of the item's own collection with its stored Gaussian. */
export function similarHref(collectionName, itemId, { k = DEFAULT_K, rank = "csd" } = {}) {
  return routeHref("search", { mode: "item", from: collectionName, id: itemId, c: collectionName, k, rank });
}

/** The query of mode=item: the indexed item, shown as it is, with a link to its own view. */
export function itemQuery(collectionName, itemId) {
  const box = h(
    "div",
    { class: "field grow item-query" },
    h("span", { class: "label-like" }, "Items like"),
    h("p", { class: "muted" }, `${itemId} (${collectionName})`),
  );
  collections()
    .then((list) => {
      const info = list.find((c) => c.name === collectionName);
      if (!info) return;
      return api.item(collectionName, itemId).then((raw) => {
        const item = api.normaliseItem(raw);
        box.replaceChildren(
          h("span", { class: "label-like" }, "Items like"),
          h(
            "a",
            { href: itemHref(collectionName, itemId), class: "item-link", title: "Open this item" },
            itemVisual(collectionName, item, info.modality),
            h("span", { class: "item-query-id" }, `${itemId} (${collectionName})`),
          ),
        );
      });
    })
    .catch((error) => box.append(inlineError(error)));
  return box;
}
