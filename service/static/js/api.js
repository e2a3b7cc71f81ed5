// The one module that knows the HTTP API: paths, request shapes and the error envelope.
// Views call these functions and get plain objects back, or an ApiError with a readable message.

const API_KEY_STORAGE = "prolip.apiKey";

export class ApiError extends Error {
  constructor(message, { status = 0, code = "network_error", details = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function apiKey() {
  try {
    return localStorage.getItem(API_KEY_STORAGE) || "";
  } catch {
    return ""; // storage blocked (private mode): run without a key
  }
}

export function setApiKey(key) {
  try {
    if (key) localStorage.setItem(API_KEY_STORAGE, key);
    else localStorage.removeItem(API_KEY_STORAGE);
  } catch {
    /* storage blocked: the key lasts for this page only */
  }
}

/** Relative to the page, so the UI keeps working behind a path prefix. */
function url(path, query) {
  const target = new URL(path.replace(/^\//, ""), document.baseURI);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") target.searchParams.set(key, String(value));
  }
  return target;
}

/** The service answers errors as {"error": {"code", "message", "details"}}; anything else still reads well. */
async function errorFrom(response) {
  let body = null;
  const text = await response.text().catch(() => "");
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const envelope = body && typeof body === "object" ? body.error || body : null;
  let message = envelope && typeof envelope.message === "string" ? envelope.message : null;
  if (!message && envelope && typeof envelope.detail === "string") message = envelope.detail;
  if (!message && envelope && envelope.checks && typeof envelope.checks === "object") {
    // /readyz answers 503 with {ready: false, checks: {component: reason}}
    message = Object.entries(envelope.checks)
      .filter(([, v]) => v !== "ok")
      .map(([k, v]) => `${k}: ${v}`)
      .join("; ");
  }
  if (!message) message = text && text.length < 300 && !text.trimStart().startsWith("<") ? text : response.statusText;
  const retry = response.headers.get("Retry-After");
  if (response.status === 429 && retry) message = `${message} (retry in ${retry} s)`;
  if (response.status === 401) message = `${message} — set an API key with the key button in the header`;
  return new ApiError(message || `request failed with HTTP ${response.status}`, {
    status: response.status,
    code: (envelope && envelope.code) || `http_${response.status}`,
    details: envelope ? envelope.details : null,
  });
}

export async function request(method, path, { json, form, query, signal, raw = false } = {}) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`; // accepted whatever the server's key header is named
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // FormData: the browser sets the multipart boundary
  }
  let response;
  try {
    response = await fetch(url(path, query), { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("The service cannot be reached. Is it running?", { code: "network_error" });
  }
  if (!response.ok) throw await errorFrom(response);
  if (raw) return response;
  if (response.status === 204) return null;
  try {
    return await response.json();
  } catch {
    throw new ApiError("The service sent a response that is not JSON.", {
      status: response.status,
      code: "bad_response",
    });
  }
}

// ------------------------------------------------------------------------------------ endpoints

/** GET /readyz: {ready, checks}; a 503's message lists the failing checks (see errorFrom). */
export const health = () => request("GET", "readyz");

export const listCollections = () => request("GET", "v1/collections");

export const collection = (name, { extremes } = {}) =>
  request("GET", `v1/collections/${encodeURIComponent(name)}`, { query: { extremes } });

/** URL of an image item's bytes, usable as <img src>. */
export function itemImageUrl(collectionName, itemId) {
  return url(`v1/collections/${encodeURIComponent(collectionName)}/items/${encodeURIComponent(itemId)}/image`).href;
}

/** Object URL of an item's image fetched with the API key (an <img src> cannot send headers). */
export async function itemImageObjectUrl(collectionName, itemId) {
  return URL.createObjectURL(await itemImageBlob(collectionName, itemId));
}

export async function itemImageBlob(collectionName, itemId) {
  const response = await request(
    "GET",
    `v1/collections/${encodeURIComponent(collectionName)}/items/${encodeURIComponent(itemId)}/image`,
    { raw: true },
  );
  return response.blob();
}

/** The options every search takes (service/schemas.py SearchOptions), as a JSON body. */
function searchOptions({ collection: name, k, rank, minProbability = null, collapse = false, cursor = null }) {
  return {
    collection: name,
    k,
    rank,
    ...(minProbability === null ? {} : { min_probability: minProbability }),
    ...(collapse ? { collapse_duplicates: true } : {}),
    ...(cursor ? { cursor } : {}),
  };
}

export const searchText = ({ query, signal, ...options }) =>
  request("POST", "v1/search/text", { json: { query, ...searchOptions(options) }, signal });

/** More like this: the stored Gaussian of item `itemId` of `itemCollection` searches `collection`. */
export const searchItem = ({ itemCollection, itemId, signal, ...options }) =>
  request("POST", "v1/search/item", {
    json: { item_collection: itemCollection, item_id: itemId, ...searchOptions(options) },
    signal,
  });

export function searchImage({ file, signal, ...options }) {
  const form = new FormData();
  form.append("file", file, file.name || "query.png");
  for (const [key, value] of Object.entries(searchOptions(options))) form.append(key, String(value));
  return request("POST", "v1/search/image", { form, signal });
}

/** GET one item: {id, modality, uncertainty, percentile, metadata, image_url}. */
export const item = (collectionName, itemId) =>
  request("GET", `v1/collections/${encodeURIComponent(collectionName)}/items/${encodeURIComponent(itemId)}`);

export function traverseImage({ file, collection: name, method, signal }) {
  const form = new FormData();
  form.append("file", file, file.name || "query.png");
  if (name) form.append("collection", name);
  if (method) form.append("method", method);
  return request("POST", "v1/traverse/image", { form, signal });
}

export const listJobs = () => request("GET", "v1/jobs");
export const job = (id) => request("GET", `v1/jobs/${encodeURIComponent(id)}`);
export const startJob = (spec) => request("POST", "v1/jobs", { json: spec });
export const cancelJob = (id) => request("DELETE", `v1/jobs/${encodeURIComponent(id)}`);

// ------------------------------------------------------------------ response shapes -> view shapes
// The service's field names (service/schemas.py) are mapped here and nowhere else.

const num = (value) =>
  value === null || value === undefined || !Number.isFinite(Number(value)) ? null : Number(value);

function itemFields(raw) {
  const metadata = raw.metadata || {};
  return {
    id: String(raw.id),
    text: raw.text ?? metadata.text ?? null,
    caption: metadata.caption ?? metadata.captions?.[metadata.captions.length - 1] ?? null,
    uncertainty: num(raw.uncertainty),
    percentile: num(raw.percentile),
    metadata,
  };
}

/** "flat" stays "flat"; a spec's repr ("IndexSpec(kind='flat', ...)") shows as its kind. */
function indexType(value) {
  if (value === null || value === undefined) return null;
  const text = String(value);
  const kind = text.match(/kind=['"]?(\w+)/);
  return kind ? kind[1] : text;
}

function collectionFields(raw) {
  return {
    name: raw.name,
    modality: raw.modality,
    size: Number(raw.size) || 0,
    dim: raw.dim ?? null,
    model: raw.model_id ?? null,
    family: raw.model_family ?? null, // prolip, pcmepp, clip; null for collections made before families
    deterministic: Boolean(raw.deterministic), // points of a CLIP-like model: no uncertainty at all
    indexType: indexType(raw.index),
  };
}

/** GET /v1/collections -> [{name, modality, size, dim, model, family, deterministic, indexType}] */
export function normaliseCollections(raw) {
  return (raw.collections || []).map(collectionFields);
}

/** GET /v1/collections/{name} -> summary + histogram [{lo, hi, count}] + extremes */
export function normaliseCollectionStats(raw) {
  const histogram = (raw.uncertainty_histogram || []).map((bin) => ({
    lo: num(bin.low),
    hi: num(bin.high),
    count: Number(bin.count) || 0,
  }));
  const extra = raw.stats || {};
  const uncertainty = extra.uncertainty && typeof extra.uncertainty === "object" ? extra.uncertainty : null;
  return {
    ...collectionFields(raw),
    histogram,
    histogramScale: raw.uncertainty_histogram_scale === "log" ? "log" : "linear",
    uncertainty: uncertainty
      ? {
          min: num(uncertainty.min),
          max: num(uncertainty.max),
          median: num(uncertainty.median ?? extra.quantiles?.p50 ?? uncertainty.p50),
          mean: num(uncertainty.mean),
        }
      : null,
    mostCertain: (raw.most_certain || []).map(itemFields),
    mostUncertain: (raw.most_uncertain || []).map(itemFields),
  };
}

/** POST /v1/search/* -> {query: {uncertainty, percentile, reference}, results: [...]} */
export function normaliseSearch(raw) {
  return {
    collection: raw.collection,
    rank: raw.rank,
    model: raw.model_id ?? null,
    calibrated: Boolean(raw.calibrated), // results carry a calibrated probability (the model has a calibrator)
    family: raw.model_family ?? null,
    deterministic: Boolean(raw.deterministic), // the model outputs points: every uncertainty is null
    offset: Number(raw.offset) || 0,
    nextCursor: raw.next_cursor ?? null, // the next page of the same search, or null
    collapsed: Number(raw.collapsed) || 0, // near-duplicates folded into the results shown
    matched: num(raw.matched),
    query: {
      uncertainty: num(raw.query?.uncertainty),
      percentile: num(raw.query?.percentile),
      reference: raw.query?.reference ?? null, // the collection of the query's modality it is ranked in
    },
    results: (raw.results || []).map((hit) => ({
      ...itemFields(hit),
      score: num(hit.score),
      csd: num(hit.csd),
      cosine: num(hit.cosine),
      probability: num(hit.probability), // calibrated P(the text is true of the image), or null
      pairProbability: num(hit.pair_probability), // the model's raw training probability
      inclusion: num(hit.inclusion),
      duplicates: (hit.duplicates || []).map(String), // ids of near-identical items folded into this one
    })),
  };
}

/** GET /v1/collections/{name}/items/{id} -> the item view's fields */
export function normaliseItem(raw) {
  return { ...itemFields(raw), collection: raw.collection, modality: raw.modality, imageUrl: raw.image_url ?? null };
}

/** POST /v1/traverse/image -> {query, steps: most specific first} */
export function normaliseTraversal(raw) {
  return {
    collection: raw.collection,
    method: raw.method ?? null,
    query: { uncertainty: num(raw.query?.uncertainty), percentile: num(raw.query?.percentile) },
    calibrated: Boolean(raw.calibrated),
    steps: (raw.captions || []).map((step) => ({
      ...itemFields(step),
      probability: num(step.probability),
      pairProbability: num(step.pair_probability),
      inclusion: num(step.inclusion),
    })),
  };
}

/** One job's status -> the fields the jobs view draws. */
export function normaliseJob(raw) {
  return {
    id: String(raw.id),
    state: String(raw.state || "unknown").toLowerCase(),
    collection: raw.collection ?? null,
    source: raw.source ?? null,
    done: Number(raw.done) || 0,
    failed: Number(raw.failed) || 0,
    total: num(raw.total),
    rate: num(raw.rate),
    eta: num(raw.eta_s),
    failures: (raw.failures || []).map((f) => ({ item: String(f.item), reason: String(f.reason) })),
    error: raw.error ?? null,
  };
}

export function normaliseJobs(raw) {
  return (raw.jobs || []).map(normaliseJob);
}

/** The folders jobs may read from (GET /v1/jobs/roots), as suggestions for the source field. */
export async function jobRoots() {
  try {
    const raw = await request("GET", "v1/jobs/roots");
    return (raw.roots || []).map(String);
  } catch {
    return []; // an older server without the route: the field still takes any path
  }
}
