// Reusable pieces of the page: meters for uncertainty and probability, the uncertainty
// histogram (inline SVG), item thumbnails and notes, and the error banner.

import { apiKey, itemImageObjectUrl, itemImageUrl } from "./api.js";
import { fmt, h, newId, ordinal, pct, svg } from "./dom.js";

/**
 * The uncertainty Σσ² of one input, drawn as a bar filled to its percentile in a collection.
 * percentile: 0..100 or null (no collection to compare with: the bar then stays empty).
 */
export function uncertaintyMeter(value, percentile, { collection = null, compact = false } = {}) {
  const known = percentile !== null && percentile !== undefined && Number.isFinite(percentile);
  const where = collection ? ` of ${collection}` : "";
  const text = known
    ? `uncertainty ${fmt(value)} (${ordinal(percentile)} percentile${where})`
    : `uncertainty ${fmt(value)}`;
  const labelId = newId("unc");
  return h(
    "div",
    { class: `meter uncertainty${compact ? " compact" : ""}` },
    h(
      "span",
      { class: "meter-label", id: labelId },
      compact ? h("span", { "aria-hidden": "true" }, "Σσ² ") : "Uncertainty Σσ² ",
      compact ? h("span", { class: "sr-only" }, "uncertainty ") : null,
      h("strong", { class: "unc-value" }, fmt(value)),
      known
        ? h("span", { class: "unc-pct" }, ` · ${ordinal(percentile)} ${compact ? "pct" : `percentile${where}`}`)
        : null,
    ),
    h(
      "div",
      {
        class: "meter-track",
        role: "meter",
        "aria-labelledby": labelId,
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": known ? Math.round(percentile) : 0,
        "aria-valuetext": text,
        title: text,
      },
      h("div", { class: "meter-fill", style: { width: `${known ? Math.max(1, Math.min(100, percentile)) : 0}%` } }),
    ),
  );
}

/** What stands where uncertainty would: a deterministic model (CLIP) embeds inputs as points. */
export function noUncertaintyNote(family, { compact = false } = {}) {
  const model = family ? `${family.toUpperCase()} model` : "model";
  const text = compact
    ? "no uncertainty (deterministic model)"
    : `No uncertainty to show: this ${model} is deterministic. It embeds each input as a point, without ` +
      "variances, so there is no Σσ², no uncertainty percentile and no inclusion test; CSD between points " +
      "is the squared distance of the means and ranks exactly as cosine.";
  return h("p", { class: `no-uncertainty${compact ? " compact" : ""} hint` }, text);
}

/** "0.4%", "<0.1%", "97%": small probabilities keep a decimal, vanishing ones do not pretend to be 0. */
function probabilityText(p) {
  if (p > 0 && p < 0.001) return "<0.1%";
  if (p < 1 && p > 0.999) return ">99.9%";
  return pct(p, p < 0.1 ? 1 : 0);
}

/**
 * The calibrated probability that a (text, image) pair matches, as a filled bar. Without one (no
 * calibrator, or a text-text search) the bar is empty and says why, rather than showing the
 * model's raw pair probability as if it were one.
 */
export function probabilityMeter(probability, { unknownReason = "no calibrated probability" } = {}) {
  const known = probability !== null && probability !== undefined && Number.isFinite(probability);
  const labelId = newId("prob");
  const text = known ? `match probability ${pct(probability, 1)}` : `match probability unknown: ${unknownReason}`;
  return h(
    "div",
    { class: "meter probability compact" },
    h(
      "span",
      { class: "meter-label", id: labelId },
      h("span", { class: "sr-only" }, "match probability "),
      "P(match) ",
      h("strong", {}, known ? probabilityText(probability) : "–"),
    ),
    h(
      "div",
      {
        class: "meter-track",
        role: "meter",
        "aria-labelledby": labelId,
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": known ? Math.round(probability * 100) : 0,
        "aria-valuetext": text,
        title: text,
      },
      h("div", { class: "meter-fill", style: { width: `${known ? Math.max(0.5, probability * 100) : 0}%` } }),
    ),
  );
}

/**
 * Histogram of uncertainties as an inline SVG bar chart.
 * bins: [{lo, hi, count}], marker: an optional uncertainty to draw as a line (e.g. the query's).
 * scale: "log" when the server spaced the bins logarithmically (uncertainties spanning orders
 * of magnitude); the axis is then logarithmic too, so every bin is drawn equally wide.
 */
export function histogram(
  bins,
  { title = "Uncertainty histogram", marker = null, markerLabel = "query", scale = "linear" } = {},
) {
  const width = 560;
  const height = 180;
  const pad = { left: 40, right: 12, top: 12, bottom: 34 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  if (!bins || !bins.length) return h("p", { class: "muted" }, "No items yet, so no histogram.");
  const lo = bins[0].lo;
  const hi = bins[bins.length - 1].hi;
  const logScale = scale === "log" && lo > 0;
  const axis = logScale ? Math.log : (value) => value;
  const span = axis(hi) - axis(lo) || 1;
  const maxCount = Math.max(1, ...bins.map((b) => b.count));
  const x = (value) => pad.left + ((axis(value) - axis(lo)) / span) * plotW;
  const y = (count) => pad.top + plotH - (count / maxCount) * plotH;
  const titleId = newId("hist");
  const total = bins.reduce((sum, b) => sum + b.count, 0);
  const chart = svg(
    "svg",
    {
      viewBox: `0 0 ${width} ${height}`,
      class: "histogram",
      role: "img",
      "aria-labelledby": titleId,
      preserveAspectRatio: "xMidYMid meet",
    },
    svg("title", { id: titleId }, `${title}: ${total} items, uncertainty from ${fmt(lo)} to ${fmt(hi)}`),
    svg("line", { x1: pad.left, y1: pad.top + plotH, x2: pad.left + plotW, y2: pad.top + plotH, class: "axis" }),
    svg("line", { x1: pad.left, y1: pad.top, x2: pad.left, y2: pad.top + plotH, class: "axis" }),
    bins.map((bin) => {
      const left = x(bin.lo);
      const barW = Math.max(1, x(bin.hi) - left - 1);
      return svg(
        "rect",
        {
          x: left.toFixed(1),
          y: y(bin.count).toFixed(1),
          width: barW.toFixed(1),
          height: (pad.top + plotH - y(bin.count)).toFixed(1),
          class: "bar",
        },
        svg("title", {}, `${fmt(bin.lo)} – ${fmt(bin.hi)}: ${bin.count} item${bin.count === 1 ? "" : "s"}`),
      );
    }),
    svg("text", { x: pad.left, y: height - 14, class: "tick", "text-anchor": "start" }, fmt(lo)),
    svg("text", { x: pad.left + plotW, y: height - 14, class: "tick", "text-anchor": "end" }, fmt(hi)),
    svg(
      "text",
      { x: pad.left + plotW / 2, y: height - 2, class: "axis-label", "text-anchor": "middle" },
      `uncertainty Σσ²${logScale ? ", log scale" : ""} (lower = more certain)`,
    ),
    svg("text", { x: pad.left - 6, y: pad.top + 10, class: "tick", "text-anchor": "end" }, String(maxCount)),
    svg("text", { x: pad.left - 6, y: pad.top + plotH, class: "tick", "text-anchor": "end" }, "0"),
    marker !== null && marker !== undefined && Number.isFinite(marker)
      ? svg(
          "g",
          { class: "marker" },
          svg("line", {
            x1: x(Math.min(hi, Math.max(lo, marker))),
            x2: x(Math.min(hi, Math.max(lo, marker))),
            y1: pad.top,
            y2: pad.top + plotH,
          }),
          svg("text", { x: x(Math.min(hi, Math.max(lo, marker))) + 4, y: pad.top + 10, class: "tick" }, markerLabel),
        )
      : null,
  );
  return chart;
}

const WEB_IMAGES_STORAGE = "prolip.webImages";
export const WEB_IMAGES_WHY =
  "Images indexed from web addresses are not kept by the service, and it does not fetch them for viewers " +
  "(that would let anyone make it reach other hosts). With web images on, your browser loads them from their " +
  "address itself, without telling that site which page asked.";

/** Whether the user let the browser load indexed images from their web addresses (off by default). */
export function webImagesAllowed() {
  try {
    return localStorage.getItem(WEB_IMAGES_STORAGE) === "on";
  } catch {
    return false;
  }
}

export function setWebImagesAllowed(allowed) {
  try {
    if (allowed) localStorage.setItem(WEB_IMAGES_STORAGE, "on");
    else localStorage.removeItem(WEB_IMAGES_STORAGE);
  } catch {
    // storage refused (private mode): the choice lasts as long as the page
  }
  window.dispatchEvent(new CustomEvent("prolip:settings"));
}

/** The web address an item was indexed from, when that is the only place its image lives. */
export function webAddress(item) {
  const metadata = item.metadata || {};
  if (typeof metadata.url !== "string" || metadata.path || metadata.filename) return null;
  try {
    const url = new URL(metadata.url);
    return url.protocol === "http:" || url.protocol === "https:" ? url : null;
  } catch {
    return null;
  }
}

/** The file an image item came from: its upload or file name, its path in the source, or the last part of
 * its web address (the whole address is its title). */
export function itemName(item) {
  const metadata = item.metadata || {};
  for (const key of ["filename", "path"]) {
    if (typeof metadata[key] === "string" && metadata[key]) return metadata[key];
  }
  const web = webAddress(item);
  return web ? decodeURIComponent(web.pathname.split("/").pop() || web.host) : item.id;
}

function webThumb(web, alt) {
  if (!webImagesAllowed()) {
    return h(
      "div",
      { class: "thumb missing web", title: WEB_IMAGES_WHY },
      h("span", {}, `on the web at ${web.host}; not loaded`),
      h(
        "button",
        { type: "button", class: "link small", onclick: () => setWebImagesAllowed(true) },
        "Show web images",
      ),
    );
  }
  const img = h("img", {
    class: "thumb",
    alt,
    loading: "lazy",
    decoding: "async",
    width: 128,
    height: 128,
    referrerpolicy: "no-referrer",
    src: web.href,
  });
  img.addEventListener("error", () =>
    img.replaceWith(h("span", { class: "thumb missing", title: web.href }, `could not be loaded from ${web.host}`)),
  );
  return img;
}

/** The visual of one indexed item: its image (image collections) or its text. */
export function itemVisual(collectionName, item, modality) {
  if (modality === "image") {
    const alt = item.caption || `image ${item.id}`;
    const web = webAddress(item);
    if (web) return webThumb(web, alt);
    const missing = () => img.replaceWith(h("span", { class: "thumb missing" }, "image unavailable"));
    const img = h("img", { class: "thumb", alt, loading: "lazy", decoding: "async", width: 128, height: 128 });
    img.addEventListener("error", missing);
    if (apiKey()) {
      // with auth on, a plain src would be refused: fetch with the key, show the bytes, free them once drawn
      itemImageObjectUrl(collectionName, item.id)
        .then((objectUrl) => {
          img.addEventListener("load", () => URL.revokeObjectURL(objectUrl), { once: true });
          img.src = objectUrl;
        })
        .catch(missing);
    } else {
      img.src = itemImageUrl(collectionName, item.id);
    }
    return img;
  }
  return h("p", { class: "item-text" }, item.text ?? `(${item.id})`);
}

/** What the metadata says about an image item: its reference caption and any corruption applied. */
export function itemNote(item) {
  const corruption = item.metadata && item.metadata.corruption;
  if (!item.caption && !corruption) return null;
  const strength = Number(item.metadata.strength);
  return h(
    "p",
    { class: "item-note" },
    corruption
      ? h(
          "span",
          { class: "tag", title: "this image was degraded on purpose, so it is harder to read" },
          `${String(corruption).replace("_", " ")}${Number.isFinite(strength) ? ` ${strength.toFixed(1)}` : ""}`,
        )
      : null,
    item.caption ? h("span", { class: "truth", title: `reference caption: ${item.caption}` }, item.caption) : null,
  );
}

/** Show an API or network error as a readable, dismissable message. */
export function showError(error, context = "") {
  const region = document.getElementById("errors");
  const message = error && error.message ? error.message : String(error);
  const status = error && error.status ? ` (HTTP ${error.status})` : "";
  const box = h(
    "div",
    { class: "error-box" },
    h("p", {}, h("strong", {}, context ? `${context}: ` : "Error: "), message, h("span", { class: "muted" }, status)),
    h(
      "button",
      { type: "button", class: "link", "aria-label": "Dismiss error", onclick: () => box.remove() },
      "Dismiss",
    ),
  );
  region.append(box);
  // keep only the newest few, so a flapping poll cannot fill the screen
  while (region.children.length > 3) region.firstChild.remove();
  return box;
}

export function clearErrors() {
  const region = document.getElementById("errors");
  if (region) region.replaceChildren();
}

/** Inline error inside a view (for errors that belong to one panel). */
export function inlineError(error) {
  const message = error && error.message ? error.message : String(error);
  return h("p", { class: "inline-error", role: "alert" }, message);
}
