// Search view: text -> images and image -> texts, with rank modes whose difference shows
// (each result says how far it moved when the rank mode changed), the query's uncertainty
// against the collection, and each result's own uncertainty and calibrated match probability.
// "Find similar" searches with an indexed item's stored Gaussian (mode=item); near-duplicates
// are folded into the best-ranked of them unless the URL says dup=0; "More results" pages on.

import * as api from "./api.js";
import { clear, h, newId } from "./dom.js";
import { navigate, routeHref } from "./router.js";
import { collectionStats, collections, percentileFromHistogram, session, setQueryImage } from "./state.js";
import { resultCard, movement } from "./cards.js";
import { itemQuery, similarHref } from "./links.js";
import { imagePicker } from "./picker.js";
import { inlineError, noUncertaintyNote, showError, uncertaintyMeter } from "./widgets.js";

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
let shownCount = 0; // results on the page (pages appended by "More results" included)
let hiddenCount = 0; // near-duplicates folded into them

/**
 * render(main, params): params from the URL (mode, q, c, k, rank, p, dup; mode=item: from + id, the
 * indexed item whose Gaussian is the query). Returns a cleanup function.
 */
export function render(main, params) {
  const mode = params.mode === "image" || (params.mode === "item" && params.from && params.id) ? params.mode : "text";
  const state = {
    mode,
    query: params.q || "",
    collection: params.c || (mode === "item" ? params.from : ""),
    k: clampK(params.k),
    rank: RANK_MODES.some((m) => m.value === params.rank) ? params.rank : "csd",
    minProbability: parseProbability(params.p),
    collapse: params.dup !== "0", // near-duplicates folded by default
  };
  let controller = null;
  let nextCursor = null; // the next page of the current search

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
    if (!active) return; // mode=item: the query is an indexed item, neither segment is active
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
      : mode === "item"
        ? itemQuery(params.from, params.id)
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
  const collapseId = newId("dup");
  const collapseBox = h("input", { id: collapseId, name: "dup", type: "checkbox", checked: state.collapse });
  const collapseField = h(
    "div",
    { class: "field checkbox" },
    collapseBox,
    h(
      "label",
      { for: collapseId, title: "fold items whose means are nearly identical (cosine ≥ 0.98) into the best-ranked one" },
      "Hide near-duplicates",
    ),
  );
  const inclusionRadio = rankGroup.querySelector('input[value="inclusion"]');
  const inclusionLabel = rankGroup.querySelector(`label[for="${inclusionRadio.id}"]`);
  let knownCollections = [];

  const submit = h("button", { type: "submit", class: "primary" }, "Search");
  const form = h(
    "form",
    { class: "search-form", role: "search", "aria-label": "Search the collection", novalidate: true },
    h("div", { class: "row" }, queryField, mode !== "image" ? h("div", { class: "field actions" }, submit) : null),
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
      collapseField,
    ),
    mode === "image" ? h("div", { class: "row" }, h("div", { class: "field actions" }, submit)) : null,
  );

  const summary = h("section", { class: "query-summary", "aria-label": "Query uncertainty", hidden: true });
  const status = h("p", { class: "result-status", role: "status", "aria-live": "polite" });
  const results = h("ol", { class: "results", "aria-label": "Results" });
  const more = h("button", { type: "button", class: "more-results", hidden: true }, "More results");

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
      more,
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
  collapseBox.addEventListener("change", () => {
    state.collapse = collapseBox.checked;
    if (hasQuery()) runSearch({ pushUrl: true });
  });
  more.addEventListener("click", () => runSearch({ pushUrl: false, cursor: nextCursor }));

  function hasQuery() {
    if (mode === "item") return true;
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
      // text queries look for images first, image queries for captions first, similar items their own
      // kind; all stay selectable
      const own = mode === "item" ? list.find((c) => c.name === params.from) : null;
      const preferred = own ? own.modality : mode === "text" ? "image" : "text";
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
      if (hasQuery() && (params.q || params.mode === "image" || mode === "item")) runSearch({ pushUrl: false });
    } catch (error) {
      clear(collectionSelect).append(h("option", { value: "" }, "unavailable"));
      showError(error, "Could not list collections");
    }
  }

  async function runSearch({ pushUrl, cursor = null }) {
    if (!cursor) {
      state.query = textInput.value.trim();
      state.k = clampK(kInput.value);
      kInput.value = state.k;
      state.collection = collectionSelect.value;
      state.minProbability = parseProbability(minPInput.value);
    }
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
          from: mode === "item" ? params.from : undefined,
          id: mode === "item" ? params.id : undefined,
          c: state.collection,
          k: state.k,
          rank: state.rank,
          p: state.minProbability ?? undefined,
          dup: state.collapse ? undefined : "0",
        }),
        { silent: true },
      );
    }
    if (controller) controller.abort();
    const mine = new AbortController();
    controller = mine;
    const { signal } = mine;
    const label = mode === "text" ? state.query : mode === "item" ? `${params.from}/${params.id}` : session.queryImageLabel;
    const key = `${mode}|${label}|${state.collection}|${state.collapse}`;
    if (key !== previousKey) previousRanks = null;
    form.setAttribute("aria-busy", "true");
    submit.disabled = true;
    more.disabled = true;
    if (!cursor) status.textContent = "Searching…";
    try {
      const request = { ...options(), cursor, signal };
      const raw =
        mode === "text"
          ? await api.searchText({ query: state.query, ...request })
          : mode === "item"
            ? await api.searchItem({ itemCollection: params.from, itemId: params.id, ...request })
            : await api.searchImage({ file: session.queryImage, ...request });
      const response = api.normaliseSearch(raw);
      const info = (await collections()).find((c) => c.name === state.collection) || { modality: "text" };
      const stats = await collectionStats(state.collection).catch(() => null);
      if (controller !== mine) return; // a newer search owns the page now
      // the service ranks the query among inputs of its own kind (texts among captions, even
      // when searching images: their uncertainties live on different scales)
      if (!cursor) showSummary(response);
      showResults(response, info, stats, { append: Boolean(cursor) });
      nextCursor = response.nextCursor;
      more.hidden = !nextCursor;
      if (!cursor) {
        previousRanks = new Map(response.results.map((r, i) => [r.id, i + 1]));
        previousKey = key;
      }
    } catch (error) {
      if (error.name === "AbortError" || controller !== mine) return;
      status.replaceChildren(inlineError(error));
      if (!cursor) {
        clear(results);
        summary.hidden = true;
        more.hidden = true;
      }
    } finally {
      form.removeAttribute("aria-busy");
      submit.disabled = false;
      more.disabled = false;
    }
  }

  function options() {
    return {
      collection: state.collection,
      k: state.k,
      rank: state.rank,
      minProbability: state.minProbability,
      collapse: state.collapse,
    };
  }

  function showSummary(response) {
    const query = response.query;
    const percentile = query.percentile;
    summary.hidden = false;
    const title = h(
      "h2",
      {},
      mode === "text"
        ? `“${state.query}”`
        : mode === "item"
          ? `Like ${params.id} (${params.from})`
          : `Image: ${session.queryImageLabel}`,
    );
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

  function showResults(response, info, stats, { append = false } = {}) {
    if (!append) {
      clear(results);
      shownCount = 0;
      hiddenCount = 0;
    }
    const rows = response.results;
    shownCount += rows.length;
    hiddenCount += response.collapsed;
    const modeLabel = RANK_MODES.find((m) => m.value === state.rank).label;
    const threshold = state.minProbability !== null ? ` with P(match) ≥ ${state.minProbability}` : "";
    const hidden = hiddenCount
      ? ` ${hiddenCount} near-duplicate${hiddenCount === 1 ? "" : "s"} hidden (see “+ similar” on the cards).`
      : "";
    const matched = response.matched !== null ? ` ${response.matched} items match the filter.` : "";
    status.textContent = shownCount
      ? `${shownCount} result${shownCount === 1 ? "" : "s"} from ${state.collection}${threshold}, ranked by ${modeLabel}.${hidden}${matched}`
      : `No results in ${state.collection}${threshold}.`;
    rows.forEach((row, index) => {
      const rank = response.offset + index + 1;
      const before = previousRanks && !append ? previousRanks.get(row.id) : undefined;
      const ownPercentile =
        row.percentile ?? (stats ? percentileFromHistogram(stats.histogram, row.uncertainty) : null);
      results.append(
        resultCard(row, {
          rank,
          collection: state.collection,
          modality: info.modality,
          movement: append ? null : movement(before, rank, previousRanks),
          percentile: ownPercentile,
          calibrated: response.calibrated,
          deterministic: response.deterministic,
          family: response.family,
          similar: similarHref(state.collection, row.id, state),
          inclusionMeaning: INCLUSION_MEANING,
          onCaptions: () => useAsQuery(row),
        }),
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
