// What the views share: the collections known to the service (refreshed on demand), collection
// stats for client-side percentiles, and the image the user last chose (a File cannot live in the URL).

import * as api from "./api.js";

const EXTREMES = 6; // most certain / most uncertain items on a collection page (two rows of three)
let collectionsPromise = null;
const statsCache = new Map();

export const session = {
  queryImage: null, // File or Blob chosen by upload, drop, or "use as query"
  queryImageLabel: "",
};

export function collections({ refresh = false } = {}) {
  if (refresh || !collectionsPromise) {
    collectionsPromise = api
      .listCollections()
      .then(api.normaliseCollections)
      .catch((error) => {
        collectionsPromise = null; // a failed load is retried next time
        throw error;
      });
  }
  return collectionsPromise;
}

export function collectionStats(name, { refresh = false } = {}) {
  if (refresh || !statsCache.has(name)) {
    const promise = api
      .collection(name, { extremes: EXTREMES })
      .then(api.normaliseCollectionStats)
      .catch((error) => {
        statsCache.delete(name);
        throw error;
      });
    statsCache.set(name, promise);
  }
  return statsCache.get(name);
}

/** Percentile (0..100) of a value against a histogram, interpolating inside its bin. */
export function percentileFromHistogram(bins, value) {
  if (!bins || !bins.length || !Number.isFinite(value)) return null;
  const total = bins.reduce((sum, b) => sum + b.count, 0);
  if (!total) return null;
  let below = 0;
  for (const bin of bins) {
    if (value >= bin.hi) {
      below += bin.count;
    } else {
      if (value > bin.lo) below += bin.count * ((value - bin.lo) / (bin.hi - bin.lo || 1));
      break;
    }
  }
  return Math.max(0, Math.min(100, (100 * below) / total));
}

export function setQueryImage(file, label) {
  session.queryImage = file;
  session.queryImageLabel = label || (file && file.name) || "image";
}
