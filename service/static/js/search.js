// Search view: text -> images and image -> texts, with rank modes whose difference shows
// (each result says how far it moved when the rank mode changed), the query's uncertainty
// against the collection, and each result's own uncertainty and calibrated match probability.

import * as api from "./api.js";
import { clear, fmt, h, newId } from "./dom.js";
import { navigate, routeHref } from "./router.js";
import { collectionStats, collections, percentileFromHistogram, session, setQueryImage } from "./state.js";
import { imagePicker } from "./picker.js";
import {
  inlineError,
  itemName,
  itemNote,
  itemVisual,
  noUncertaintyNote,
  probabilityMeter,
  showError,
  uncertaintyMeter,
} from "./widgets.js";

export const INCLUSION_MEANING =
  "Inclusion: how far the image lies inside the text (positive: the image is an instance of it; higher: more " +
  "clearly); between two texts or two images, how far the query lies inside the item";
export const RANK_MODES = [
  { value: "csd", label: "CSD", hint: "closest Gaussians first: distance of means plus both uncertainties" },
  { value: "cosine", label: "Cosine", hint: "means only, as a deterministic CLIP would rank" },
  {
    value: "inclusion",
    label: "Inclusion",
    hint: `highest inclusion first. ${INCLUSION_MEANING}`,
  },
  {
    value: "probability",
    label: "Probability",
    hint: "most likely true matches first: the calibrated probability that the text describes the image",
  },
];
const DEFAULT_K = 12;
const MAX_K = 100;

let previousRanks = null; // id -> rank of the last result list, to show movement on re-ranking
let previousKey = "";

/** render(main, params): params from the URL (mode, q, c, k, rank). Returns a cleanup function. */
export function render(main, params) {
  const mode = params.mode === "image" ? "image" : "text";
  const state = {
    mode,
    query: params.q || "",
    collection: params.c || "",
    k: clampK(params.k),
    rank: RANK_MODES.some((m) => m.value === params.rank) ? params.rank : "csd",
    minProbability: parseProbability(params.p),
  };
  let controller = null;

  const queryTypeId = newId("qtype");
  const modeSwitch = h(
    "div",
    { class: "segmented", role: "group", "aria-labelledby": queryTypeId },
    h("span", { id: queryTypeId, class: "segmented-label" }, "Query"),
    modeLink("text", "Text query", state),
    modeLink("image", "Image query", state),
  );
  // the active query type says what it searches now ("Text → texts" when the chosen collection holds
  // captions), not what it usually searches; the other one picks its own collection when chosen
  function showTarget(modality) {
    const noun = modality === "image" ? "images" : "texts";
    const active = modeSwitch.querySelector("a.segment.active");
    active.textContent = `${mode === "text" ? "Text" : "Image"} → ${noun}`;
  }

  // ---- query input (text box or image picker)
  const queryId = newId("query");
  const textInput = h("input", {
    id: queryId,
    name: "q",
    type: "search",
    value: state.query,
    required: true,
    maxlength: 1000,
    placeholder: "e.g. a red circle left of a small blue square",
    autocomplete: "off",
    spellcheck: "false",
  });
  const picker = imagePicker({
    label: "Query image",
    initial: session.queryImage ? { file: session.queryImage, label: session.queryImageLabel } : null,
    onChange: (file) => {
      setQueryImage(file, file && file.name);
      if (file) runSearch({ pushUrl: true });
    },
  });
  const queryField =
    mode === "text"
      ? h("div", { class: "field grow" }, h("label", { for: queryId }, "Describe what you are looking for"), textInput)
      : h("div", { class: "field grow" }, picker.element);

  // ---- options: collection, k, rank mode
  const collectionId = newId("collection");
  const collectionSelect = h(
    "select",
    { id: collectionId, name: "c", disabled: true },
    h("option", { value: "" }, "loading collections…"),
  );
  const kId = newId("k");
  const kInput = h("input", {
    id: kId,
    name: "k",
    type: "number",
    min: 1,
    max: MAX_K,
    step: 1,
    value: state.k,
    inputmode: "numeric",
  });
  const minPId = newId("minp");
  const minPHint = newId("minp-hint");
  const minPInput = h("input", {
    id: minPId,
    name: "p",
    type: "number",
    min: 0,
    max: 1,
    step: 0.05,
    placeholder: "off",
    inputmode: "decimal",
    value: state.minProbability ?? "",
    "aria-describedby": minPHint,
  });
  const rankLegendId = newId("rank");
  const rankGroup = h(
    "fieldset",
    { class: "rank-modes" },
    h("legend", { id: rankLegendId }, "Rank by"),
    RANK_MODES.map((m) => {
      const id = newId(`rank-${m.value}`);
      return h(
        "span",
        { class: "radio" },
        h("input", { type: "radio", name: "rank", id, value: m.value, checked: m.value === state.rank }),
        h("label", { for: id, title: m.hint }, m.label),
      );
    }),
  );
  const rankHint = h("p", { class: "hint", id: newId("rank-hint") }, hintFor(state.rank));
  const inclusionRadio = rankGroup.querySelector('input[value="inclusion"]');
  const inclusionLabel = rankGroup.querySelector(`label[for="${inclusionRadio.id}"]`);
  let knownCollections = [];

  const submit = h("button", { type: "submit", class: "primary" }, "Search");
  const form = h(
    "form",
    { class: "search-form", role: "search", "aria-label": "Search the collection", novalidate: true },
    h("div", { class: "row" }, queryField, mode === "text" ? h("div", { class: "field actions" }, submit) : null),
    h(
      "div",
      { class: "row options" },
      h("div", { class: "field" }, h("label", { for: collectionId }, "Collection"), collectionSelect),
      h("div", { class: "field narrow" }, h("label", { for: kId }, "Results (k)"), kInput),
      h(
        "div",
        { class: "field narrow" },
        h("label", { for: minPId }, "Min. P(match)"),
        minPInput,
        h(
          "span",
          { class: "sr-only", id: minPHint },
          "hide results whose calibrated probability of being a true match is lower; empty = off",
        ),
      ),
      h("div", { class: "field" }, rankGroup, rankHint),
    ),
    mode === "image" ? h("div", { class: "row" }, h("div", { class: "field actions" }, submit)) : null,
  );

  const summary = h("section", { class: "query-summary", "aria-label": "Query uncertainty", hidden: true });
  const status = h("p", { class: "result-status", role: "status", "aria-live": "polite" });
  const results = h("ol", { class: "results", "aria-label": "Results" });

  clear(main).append(
    h(
      "section",
      { class: "view view-search" },
      h("h1", { tabindex: "-1" }, "Search"),
      modeSwitch,
      form,
      summary,
      status,
      results,
    ),
  );

  // ---- behaviour
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch({ pushUrl: true });
  });
  rankGroup.addEventListener("change", (event) => {
    state.rank = event.target.value;
    rankHint.textContent = hintFor(state.rank);
    if (hasQuery()) runSearch({ pushUrl: true });
  });
  collectionSelect.addEventListener("change", () => {
    state.collection = collectionSelect.value;
    showTarget(collectionSelect.selectedOptions[0]?.dataset.modality);
    previousRanks = null; // another collection: movement would mean nothing
    fitRankModes();
    if (hasQuery()) runSearch({ pushUrl: true });
  });

  /** A deterministic model's collection has no variances: the inclusion test cannot rank it. */
  function fitRankModes() {
    const info = knownCollections.find((c) => c.name === state.collection);
    const points = Boolean(info && info.deterministic);
    inclusionRadio.disabled = points;
    inclusionLabel.title = points
      ? "unavailable: this collection's model is deterministic (no variances, so no inclusion test)"
      : hintFor("inclusion");
    if (points && state.rank === "inclusion") {
      state.rank = "csd";
      rankGroup.querySelector('input[value="csd"]').checked = true;
    }
    rankHint.textContent = points
      ? `${hintFor(state.rank)}. This collection's model is deterministic: CSD ranks as cosine, and ` +
        "Inclusion needs variances it does not have."
      : hintFor(state.rank);
  }
  kInput.addEventListener("change", () => {
    state.k = clampK(kInput.value);
    kInput.value = state.k;
  });
  minPInput.addEventListener("change", () => {
    state.minProbability = parseProbability(minPInput.value);
    minPInput.value = state.minProbability ?? "";
    if (hasQuery()) runSearch({ pushUrl: true });
  });

  function hasQuery() {
    return mode === "text" ? textInput.value.trim().length > 0 : Boolean(session.queryImage);
  }

  loadCollections();

  async function loadCollections() {
    try {
      const list = await collections({ refresh: true });
      knownCollections = list;
      clear(collectionSelect);
      if (!list.length) {
        collectionSelect.append(h("option", { value: "" }, "no collections yet"));
        status.replaceChildren(
          h(
            "span",
            {},
            "No collections are indexed yet. Start an indexing job on the ",
            h("a", { href: "#/jobs" }, "Jobs"),
            " page.",
          ),
        );
        return;
      }
      // text queries look for images first, image queries for captions first; all stay selectable
      const preferred = mode === "text" ? "image" : "text";
      const sorted = [...list].sort((a, b) => (a.modality === preferred ? 0 : 1) - (b.modality === preferred ? 0 : 1));
      for (const c of sorted) {
        collectionSelect.append(
          h(
            "option",
            { value: c.name, dataset: { modality: c.modality } },
            `${c.name} (${c.modality}, ${c.size} items)`,
          ),
        );
      }
      if (!state.collection || !list.some((c) => c.name === state.collection)) state.collection = sorted[0].name;
      collectionSelect.value = state.collection;
      showTarget(list.find((c) => c.name === state.collection).modality);
      collectionSelect.disabled = false;
      fitRankModes();
      if (hasQuery() && (params.q || params.mode === "image")) runSearch({ pushUrl: false });
    } catch (error) {
      clear(collectionSelect).append(h("option", { value: "" }, "unavailable"));
      showError(error, "Could not list collections");
    }
  }

  async function runSearch({ pushUrl }) {
    state.query = textInput.value.trim();
    state.k = clampK(kInput.value);
    kInput.value = state.k;
    state.collection = collectionSelect.value;
    state.minProbability = parseProbability(minPInput.value);
    if (mode === "text" && !state.query) {
      status.replaceChildren(inlineError(new Error("Type a query first.")));
      textInput.focus();
      return;
    }
    if (mode === "image" && !session.queryImage) {
      status.replaceChildren(inlineError(new Error("Choose or drop an image first.")));
      return;
    }
    if (!state.collection) {
      status.replaceChildren(inlineError(new Error("There is no collection to search.")));
      return;
    }
    if (pushUrl) {
      // keep the search in the URL (shareable, back button) without re-rendering the view
      navigate(
        routeHref("search", {
          mode,
          q: mode === "text" ? state.query : undefined,
          c: state.collection,
          k: state.k,
          rank: state.rank,
          p: state.minProbability ?? undefined,
        }),
        { silent: true },
      );
    }
    if (controller) controller.abort();
    const mine = new AbortController();
    controller = mine;
    const { signal } = mine;
    const key = `${mode}|${mode === "text" ? state.query : session.queryImageLabel}|${state.collection}`;
    if (key !== previousKey) previousRanks = null;
    form.setAttribute("aria-busy", "true");
    submit.disabled = true;
    status.textContent = "Searching…";
    try {
      const raw =
        mode === "text"
          ? await api.searchText({ query: state.query, ...options(), signal })
          : await api.searchImage({ file: session.queryImage, ...options(), signal });
      const response = api.normaliseSearch(raw);
      const info = (await collections()).find((c) => c.name === state.collection) || { modality: "text" };
      const stats = await collectionStats(state.collection).catch(() => null);
      if (controller !== mine) return; // a newer search owns the page now
      // the service ranks the query among inputs of its own kind (texts among captions, even
      // when searching images: their uncertainties live on different scales)
      showSummary(response);
      showResults(response, info, stats);
      previousRanks = new Map(response.results.map((r, i) => [r.id, i + 1]));
      previousKey = key;
    } catch (error) {
      if (error.name === "AbortError" || controller !== mine) return;
      status.replaceChildren(inlineError(error));
      clear(results);
      summary.hidden = true;
    } finally {
      form.removeAttribute("aria-busy");
      submit.disabled = false;
    }
  }

  function options() {
    return { collection: state.collection, k: state.k, rank: state.rank, minProbability: state.minProbability };
  }

  function showSummary(response) {
    const query = response.query;
    const percentile = query.percentile;
    summary.hidden = false;
    const title = h("h2", {}, mode === "text" ? `“${state.query}”` : `Image: ${session.queryImageLabel}`);
    if (response.deterministic) {
      summary.replaceChildren(title, noUncertaintyNote(response.family));
      return;
    }
    summary.replaceChildren(
      title,
      uncertaintyMeter(query.uncertainty, percentile, { collection: query.reference }),
      h(
        "p",
        { class: "hint" },
        percentile === null || percentile === undefined
          ? "Higher uncertainty means a more general or ambiguous query."
          : percentile >= 50
            ? "A general or ambiguous query: many items can match it, so expect varied results."
            : "A specific query: few items should match it closely.",
      ),
    );
  }

  function showResults(response, info, stats) {
    clear(results);
    const rows = response.results;
    const modeLabel = RANK_MODES.find((m) => m.value === state.rank).label;
    const threshold = state.minProbability !== null ? ` with P(match) ≥ ${state.minProbability}` : "";
    status.textContent = rows.length
      ? `${rows.length} result${rows.length === 1 ? "" : "s"} from ${state.collection}${threshold}, ranked by ${modeLabel}.`
      : `No results in ${state.collection}${threshold}.`;
    rows.forEach((row, index) => {
      const rank = index + 1;
      const before = previousRanks ? previousRanks.get(row.id) : undefined;
      const ownPercentile =
        row.percentile ?? (stats ? percentileFromHistogram(stats.histogram, row.uncertainty) : null);
      results.append(
        h(
          "li",
          { class: "result-card", dataset: { id: row.id } },
          h(
            "div",
            { class: "card-head" },
            h("span", { class: "rank-badge", "aria-label": `rank ${rank}` }, `#${rank}`),
            movement(before, rank, previousRanks),
          ),
          itemVisual(state.collection, row, info.modality),
          info.modality === "image"
            ? h("p", { class: "item-name", title: row.metadata.url || itemName(row) }, itemName(row))
            : null,
          itemNote(row),
          probabilityMeter(row.probability, {
            unknownReason: response.calibrated
              ? "not a text-image pair"
              : "the model has no calibrator (its raw pair probability is not a match probability)",
          }),
          response.deterministic
            ? noUncertaintyNote(response.family, { compact: true })
            : uncertaintyMeter(row.uncertainty, ownPercentile, { compact: true }),
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
              ? [
                  h("dt", { title: INCLUSION_MEANING }, "incl"),
                  h("dd", { title: INCLUSION_MEANING }, fmt(row.inclusion)),
                ]
              : null,
          ),
          info.modality === "image"
            ? h(
                "div",
                { class: "card-actions" },
                response.deterministic // the traversal follows the inclusion test: it needs variances
                  ? null
                  : h(
                      "a",
                      { href: routeHref("traverse", { from: state.collection, id: row.id }), class: "button small" },
                      "Traverse",
                    ),
                h(
                  "button",
                  {
                    type: "button",
                    class: "small",
                    "aria-label": "Search captions with this image",
                    onclick: () => useAsQuery(row),
                  },
                  "Captions",
                ),
              )
            : null,
        ),
      );
    });
  }

  async function useAsQuery(row) {
    try {
      const blob = await api.itemImageBlob(state.collection, row.id);
      setQueryImage(blob, `${state.collection}/${row.id}`);
      const captionCollection = (await collections()).find((c) => c.modality === "text");
      navigate(
        routeHref("search", {
          mode: "image",
          c: captionCollection ? captionCollection.name : undefined,
          k: state.k,
          rank: state.rank,
        }),
      );
    } catch (error) {
      showError(error, "Could not load that image");
    }
  }

  if (mode === "text" && !state.query) textInput.focus();
  return () => {
    if (controller) controller.abort();
  };
}

function modeLink(value, label, state) {
  const active = state.mode === value;
  return h(
    "a",
    {
      href: routeHref("search", { mode: value, k: state.k, rank: state.rank }),
      class: `segment${active ? " active" : ""}`,
      "aria-current": active ? "page" : null,
    },
    label,
  );
}

/** "▲ 3" when a result climbed since the last ranking, "▼ 2" when it fell, "new" when it entered. */
function movement(before, rank, previous) {
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

function hintFor(rank) {
  return RANK_MODES.find((m) => m.value === rank).hint;
}

/** A probability in [0, 1] from a form or URL value; null (no threshold) for empty or invalid input. */
function parseProbability(value) {
  if (value === undefined || value === null || String(value).trim() === "") return null;
  const p = Number(value);
  if (!Number.isFinite(p)) return null;
  return Math.min(1, Math.max(0, p));
}

function clampK(value) {
  const k = Number.parseInt(value, 10);
  if (!Number.isFinite(k) || k < 1) return DEFAULT_K;
  return Math.min(k, MAX_K);
}
