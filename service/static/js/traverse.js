// Traversal view: for one image, the captions that describe it, from the most specific to the
// most inclusive (the paper's HierarCaps traversal), each with its uncertainty and match probability.

import * as api from "./api.js";
import { clear, fmt, h, newId } from "./dom.js";
import { navigate, routeHref } from "./router.js";
import { collectionStats, collections, percentileFromHistogram, session, setQueryImage } from "./state.js";
import { imagePicker } from "./picker.js";
import { INCLUSION_MEANING } from "./search.js";
import { inlineError, probabilityMeter, uncertaintyMeter } from "./widgets.js";

const METHODS = [
  {
    value: "walk",
    label: "Walk to the root",
    hint: "the paper's HierarCaps walk: from the closest caption towards the most general one",
  },
  {
    value: "inclusion",
    label: "Captions that match",
    hint: "every caption the model matches with the image, least uncertain first",
  },
];

/** params: from + id (an indexed image), c (caption collection), m (method). */
export function render(main, params) {
  let controller = null;
  let method = METHODS.some((m) => m.value === params.m) ? params.m : "walk";
  const picker = imagePicker({
    label: "Image to describe",
    initial: session.queryImage ? { file: session.queryImage, label: session.queryImageLabel } : null,
    onChange: (file) => {
      setQueryImage(file, file && file.name);
      navigate(routeHref("traverse", { c: select.value || undefined, m: method }), { silent: true });
      run();
    },
  });
  const selectId = newId("captions");
  const select = h("select", { id: selectId, disabled: true }, h("option", { value: "" }, "loading…"));
  const methodHint = h("p", { class: "hint" }, METHODS.find((m) => m.value === method).hint);
  const methodGroup = h(
    "fieldset",
    { class: "rank-modes" },
    h("legend", {}, "Method"),
    METHODS.map((m) => {
      const id = newId(`method-${m.value}`);
      return h(
        "span",
        { class: "radio" },
        h("input", { type: "radio", name: "method", id, value: m.value, checked: m.value === method }),
        h("label", { for: id, title: m.hint }, m.label),
      );
    }),
  );
  const status = h("p", { class: "result-status", role: "status", "aria-live": "polite" });
  const summary = h("div", { class: "query-summary", hidden: true });
  const output = h("div", { class: "traversal" });

  clear(main).append(
    h(
      "section",
      { class: "view view-traverse" },
      h("h1", { tabindex: "-1" }, "Traverse"),
      h(
        "p",
        { class: "lede" },
        "Captions for one image, from the most specific to the most inclusive, as in the ",
        "paper's HierarCaps traversal. Specific captions have low uncertainty; general ones (“an object”) have high ",
        "uncertainty and cover many images.",
      ),
      h(
        "div",
        { class: "row" },
        h("div", { class: "field grow" }, picker.element),
        h("div", { class: "field" }, h("label", { for: selectId }, "Caption collection"), select),
      ),
      h("div", { class: "row" }, h("div", { class: "field" }, methodGroup, methodHint)),
      summary,
      status,
      output,
    ),
  );

  methodGroup.addEventListener("change", (event) => {
    method = event.target.value;
    methodHint.textContent = METHODS.find((m) => m.value === method).hint;
    navigate(routeHref("traverse", { from: params.from, id: params.id, c: select.value, m: method }), { silent: true });
    run();
  });

  select.addEventListener("change", () => {
    navigate(routeHref("traverse", { from: params.from, id: params.id, c: select.value, m: method }), { silent: true });
    run();
  });

  init();

  async function init() {
    try {
      const list = await collections({ refresh: true });
      const texts = list.filter((c) => c.modality === "text");
      clear(select);
      if (!texts.length) {
        select.append(h("option", { value: "" }, "no caption collection"));
        status.replaceChildren(
          inlineError(new Error("No caption (text) collection is indexed, so there is nothing to traverse.")),
        );
        return;
      }
      for (const c of texts) select.append(h("option", { value: c.name }, `${c.name} (${c.size} captions)`));
      select.value = texts.some((c) => c.name === params.c) ? params.c : texts[0].name;
      select.disabled = false;
      if (params.from && params.id) {
        status.textContent = "Loading the image…";
        const blob = await api.itemImageBlob(params.from, params.id);
        setQueryImage(blob, `${params.from}/${params.id}`);
        picker.set(blob, session.queryImageLabel);
      }
      if (session.queryImage) run();
      else status.textContent = "Choose an image, or open one from a search result.";
    } catch (error) {
      status.replaceChildren(inlineError(error));
    }
  }

  async function run() {
    if (!session.queryImage || !select.value) return;
    if (controller) controller.abort();
    const mine = new AbortController();
    controller = mine;
    status.textContent = "Traversing…";
    output.setAttribute("aria-busy", "true");
    try {
      const raw = await api.traverseImage({
        file: session.queryImage,
        collection: select.value,
        method,
        signal: mine.signal,
      });
      const response = api.normaliseTraversal(raw);
      const stats = await collectionStats(select.value).catch(() => null);
      if (controller !== mine) return; // a newer traversal owns the page now
      show(response, stats);
    } catch (error) {
      if (error.name === "AbortError" || controller !== mine) return;
      clear(output);
      status.replaceChildren(inlineError(error));
    } finally {
      output.removeAttribute("aria-busy");
    }
  }

  function show(response, stats) {
    clear(output);
    summary.hidden = false;
    summary.replaceChildren(
      h("h2", {}, `Image: ${session.queryImageLabel}`),
      uncertaintyMeter(response.query.uncertainty, response.query.percentile, { collection: "the images" }),
    );
    const steps = response.steps;
    status.textContent = steps.length
      ? `${steps.length} caption${steps.length === 1 ? "" : "s"}, from the most specific to the most inclusive.`
      : "No caption of this collection matches the image.";
    if (!steps.length) return;
    // explicit roles: on a phone the rows are laid out as blocks, which must not cost the table its meaning
    const end = (index) => (index === 0 ? "most specific" : index === steps.length - 1 ? "most inclusive" : null);
    const table = h(
      "table",
      { class: "traversal-table", role: "table" },
      h("caption", { class: "sr-only" }, "Captions from the most specific to the most inclusive"),
      h(
        "thead",
        { role: "rowgroup" },
        h(
          "tr",
          { role: "row" },
          h("th", { scope: "col", role: "columnheader" }, "Step"),
          h("th", { scope: "col", role: "columnheader" }, "Caption"),
          h("th", { scope: "col", role: "columnheader" }, "Uncertainty"),
          h("th", { scope: "col", role: "columnheader" }, "Match"),
          h("th", { scope: "col", role: "columnheader", title: INCLUSION_MEANING }, "Inclusion"),
        ),
      ),
      h(
        "tbody",
        { role: "rowgroup" },
        steps.map((step, index) =>
          h(
            "tr",
            { role: "row" },
            h(
              "td",
              { class: "num step", role: "cell" },
              h("span", { class: "step-number" }, String(index + 1)),
              end(index) ? h("span", { class: "step-end" }, ` ${end(index)}`) : null,
            ),
            h("th", { scope: "row", role: "rowheader", class: "caption-cell" }, step.text ?? step.id),
            h(
              "td",
              { role: "cell", dataset: { label: "Uncertainty" } },
              uncertaintyMeter(
                step.uncertainty,
                step.percentile ?? (stats ? percentileFromHistogram(stats.histogram, step.uncertainty) : null),
                { compact: true },
              ),
            ),
            h(
              "td",
              { role: "cell", dataset: { label: "Match" } },
              probabilityMeter(step.probability, {
                unknownReason: "the model has no calibrator (its raw pair probability is not a match probability)",
              }),
            ),
            h(
              "td",
              { class: "num", role: "cell", dataset: { label: "Inclusion" }, title: INCLUSION_MEANING },
              fmt(step.inclusion),
            ),
          ),
        ),
      ),
    );
    output.append(
      h("div", { class: "table-scroll" }, table),
      h(
        "p",
        { class: "hint" },
        `Step 1 is the most specific caption, the last the most inclusive. ${INCLUSION_MEANING}.`,
      ),
    );
  }

  return () => {
    if (controller) controller.abort();
  };
}
