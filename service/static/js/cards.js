// One result card of a search: rank and movement, the item (linked to its view), near-duplicates
// folded into it, its calibrated probability and uncertainty, raw scores, and where to go from it.

import { fmt, h } from "./dom.js";
import { linkedVisual } from "./links.js";
import { routeHref } from "./router.js";
import { itemName, itemNote, noUncertaintyNote, probabilityMeter, uncertaintyMeter } from "./widgets.js";

/**
 * The card of `row` (a normalised search result) at place `rank` of a `collection` of `modality`;
 * `inclusionMeaning` explains the inclusion score (search.js INCLUSION_MEANING); a `deterministic` model
 * (of `family`) has no uncertainty to show and nothing to traverse.
 */
export function resultCard(
  row,
  {
    rank,
    collection,
    modality,
    movement,
    percentile,
    calibrated,
    deterministic = false,
    family = null,
    similar,
    inclusionMeaning,
    onCaptions,
  },
) {
  return h(
    "li",
    { class: "result-card", dataset: { id: row.id } },
    h(
      "div",
      { class: "card-head" },
      h("span", { class: "rank-badge", "aria-label": `rank ${rank}` }, `#${rank}`),
      movement,
    ),
    linkedVisual(collection, row, modality),
    modality === "image"
      ? h("p", { class: "item-name", title: row.metadata.url || itemName(row) }, itemName(row))
      : null,
    itemNote(row),
    row.duplicates.length
      ? h(
          "p",
          { class: "duplicates", title: `near-identical: ${row.duplicates.join(", ")}` },
          `+ ${row.duplicates.length} similar hidden`,
        )
      : null,
    probabilityMeter(row.probability, {
      unknownReason: calibrated
        ? "not a text-image pair"
        : "the model has no calibrator (its raw pair probability is not a match probability)",
    }),
    deterministic
      ? noUncertaintyNote(family, { compact: true })
      : uncertaintyMeter(row.uncertainty, percentile, { compact: true }),
    h(
      "dl",
      { class: "scores" },
      h("dt", {}, "CSD"),
      h("dd", {}, fmt(row.csd)),
      h("dt", {}, "cos"),
      h("dd", {}, fmt(row.cosine)),
      h("dt", { title: "the model's raw pair probability (how likely this was the training pair)" }, "pair"),
      h("dd", {}, fmt(row.pairProbability)),
      row.inclusion !== null && row.inclusion !== undefined
        ? [h("dt", { title: inclusionMeaning }, "incl"), h("dd", { title: inclusionMeaning }, fmt(row.inclusion))]
        : null,
    ),
    h(
      "div",
      { class: "card-actions" },
      h("a", { href: similar, class: "button small", "aria-label": `Find items similar to ${row.id}` }, "Similar"),
      modality === "image"
        ? [
            deterministic // the traversal follows the inclusion test: it needs variances
              ? null
              : h("a", { href: routeHref("traverse", { from: collection, id: row.id }), class: "button small" }, "Traverse"),
            h(
              "button",
              { type: "button", class: "small", "aria-label": "Search captions with this image", onclick: onCaptions },
              "Captions",
            ),
          ]
        : null,
    ),
  );
}

/** "▲ 3" when a result climbed since the last ranking, "▼ 2" when it fell, "new" when it entered. */
export function movement(before, rank, previous) {
  if (!previous) return null;
  if (before === undefined) return h("span", { class: "move new", title: "not in the previous ranking" }, "new");
  if (before === rank) return h("span", { class: "move same", title: "same place as before" }, "=");
  const up = before > rank;
  return h(
    "span",
    {
      class: `move ${up ? "up" : "down"}`,
      title: `was #${before}`,
      "aria-label": `${up ? "up" : "down"} ${Math.abs(before - rank)} from #${before}`,
    },
    `${up ? "▲" : "▼"} ${Math.abs(before - rank)}`,
  );
}
