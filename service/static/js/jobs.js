// Indexing jobs: start one from a server-side source, watch progress live (polling while any
// job runs), see each failure with its reason, cancel a running job.

import * as api from "./api.js";
import { clear, duration, h, newId } from "./dom.js";
import { routeHref } from "./router.js";
import { collections } from "./state.js";
import { inlineError, showError } from "./widgets.js";

const POLL_ACTIVE_MS = 600;
const POLL_IDLE_MS = 5000;
const ACTIVE = new Set(["queued", "planning", "running"]); // indexer/jobstore.py ACTIVE_STATES

export function render(main) {
  let timer = null;
  let stopped = false;

  const sourceId = newId("source");
  const sourcesList = newId("sources");
  const nameId = newId("target");
  const modalityId = newId("modality");
  const source = h("input", {
    id: sourceId,
    name: "source",
    required: true,
    list: sourcesList,
    autocomplete: "off",
    placeholder: "a folder or file under a configured job root",
    spellcheck: "false",
  });
  const datalist = h("datalist", { id: sourcesList });
  const target = h("input", {
    id: nameId,
    name: "collection",
    required: true,
    pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]*",
    maxlength: 64,
    placeholder: "my-images",
    autocomplete: "off",
    spellcheck: "false",
  });
  const modality = h(
    "select",
    { id: modalityId, name: "modality" },
    h("option", { value: "" }, "guess from the source"),
    h("option", { value: "image" }, "images"),
    h("option", { value: "text" }, "texts"),
  );
  const submit = h("button", { type: "submit", class: "primary" }, "Start indexing");
  const formStatus = h("p", { class: "form-status", role: "status", "aria-live": "polite" });
  const sourceHint = h(
    "p",
    { class: "hint", id: newId("source-hint") },
    "Server-side path: a folder of images, a CSV or JSONL manifest (an image path or URL and/or a caption per ",
    "row), or WebDataset shards. Only paths under the service's configured job roots are accepted.",
  );
  source.setAttribute("aria-describedby", sourceHint.id);
  const form = h(
    "form",
    { class: "job-form", "aria-label": "Start an indexing job", novalidate: true },
    h(
      "div",
      { class: "row" },
      h("div", { class: "field grow" }, h("label", { for: sourceId }, "Source"), source, datalist, sourceHint),
    ),
    h(
      "div",
      { class: "row" },
      h("div", { class: "field" }, h("label", { for: nameId }, "Into collection"), target),
      h("div", { class: "field" }, h("label", { for: modalityId }, "Holding"), modality),
      h("div", { class: "field actions" }, submit),
    ),
    formStatus,
  );
  const list = h("ol", { class: "job-list", "aria-label": "Indexing jobs" });
  const listStatus = h("p", { class: "muted", role: "status" }, "Loading jobs…");

  clear(main).append(
    h(
      "section",
      { class: "view view-jobs" },
      h("h1", { tabindex: "-1" }, "Indexing jobs"),
      h("section", { class: "panel" }, h("h2", {}, "Start a job"), form),
      h("section", { class: "panel" }, h("h2", {}, "Jobs"), listStatus, list),
    ),
  );

  api.jobRoots().then((roots) => {
    for (const root of roots) datalist.append(h("option", { value: root }));
    if (roots.length) source.placeholder = `e.g. ${roots[0]}/…`;
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!source.value.trim() || !target.value.trim()) {
      formStatus.replaceChildren(inlineError(new Error("Give both a source path and a collection name.")));
      (source.value.trim() ? target : source).focus();
      return;
    }
    submit.disabled = true;
    formStatus.textContent = "Starting…";
    try {
      const started = api.normaliseJob(
        await api.startJob({
          source: source.value.trim(),
          collection: target.value.trim(),
          modality: modality.value || null,
        }),
      );
      formStatus.textContent = `Job ${started.id} started.`;
      collections({ refresh: true }).catch(() => {});
      await refresh();
    } catch (error) {
      formStatus.replaceChildren(inlineError(error));
    } finally {
      submit.disabled = false;
    }
  });

  async function refresh() {
    if (stopped) return;
    clearTimeout(timer);
    let active = false;
    try {
      const jobs = api.normaliseJobs(await api.listJobs());
      active = jobs.some((j) => ACTIVE.has(j.state));
      await addFailures(jobs);
      draw(jobs);
    } catch (error) {
      listStatus.replaceChildren(inlineError(error));
    }
    if (!stopped) timer = setTimeout(refresh, active ? POLL_ACTIVE_MS : POLL_IDLE_MS);
  }

  // The job list carries counts only; each job's failures (with reasons) come from its own
  // status, fetched again only when its failure count changed.
  const failuresSeen = new Map(); // job id -> {failed, failures}

  async function addFailures(jobs) {
    await Promise.all(
      jobs.map(async (job) => {
        if (!job.failed) return;
        const known = failuresSeen.get(job.id);
        if (known && known.failed === job.failed) {
          job.failures = known.failures;
          return;
        }
        try {
          const detail = api.normaliseJob(await api.job(job.id));
          job.failures = detail.failures;
          // remember only a complete answer (the service lists at most 100); else ask again next poll
          if (detail.failures.length >= Math.min(job.failed, 100)) {
            failuresSeen.set(job.id, { failed: job.failed, failures: detail.failures });
          }
        } catch {
          job.failures = known ? known.failures : []; // shown again on the next poll
        }
      }),
    );
  }

  // Cards are updated in place, keyed by job id: polling must not steal focus from a Cancel
  // button or close a failure list the user opened.
  const cards = new Map();

  function draw(jobs) {
    listStatus.textContent = jobs.length ? "" : "No jobs yet.";
    const seen = new Set();
    jobs.forEach((job, position) => {
      seen.add(job.id);
      let card = cards.get(job.id);
      if (!card) {
        card = jobCard(job.id);
        cards.set(job.id, card);
      }
      card.update(job);
      if (list.children[position] !== card.root) list.insertBefore(card.root, list.children[position] || null);
    });
    for (const [id, card] of cards) {
      if (!seen.has(id)) {
        card.root.remove();
        cards.delete(id);
      }
    }
  }

  function jobCard(id) {
    const badge = h("span", { class: "state-badge" });
    const name = h("strong", {});
    const where = h("span", { class: "mono muted job-source" });
    const cancel = h(
      "button",
      {
        type: "button",
        class: "small danger",
        "aria-label": `Cancel job ${id}`,
        onclick: async () => {
          cancel.disabled = true;
          try {
            await api.cancelJob(id);
            await refresh();
          } catch (error) {
            showError(error, "Could not cancel the job");
          } finally {
            cancel.disabled = false;
          }
        },
      },
      "Cancel",
    );
    const progressId = newId("progress");
    const bar = h("progress", { id: progressId });
    const counts = h("span", { class: "progress-text" });
    const meta = h("p", { class: "job-meta muted" });
    const summary = h("summary", {});
    const failureList = h("ul", {});
    const failures = h("details", { class: "failures", hidden: true }, summary, failureList);
    const root = h(
      "li",
      { class: "job-card", dataset: { job: id } },
      h("div", { class: "job-head" }, badge, name, where, cancel),
      h(
        "div",
        { class: "progress" },
        h("label", { for: progressId, class: "sr-only" }, `Progress of job ${id}`),
        bar,
        counts,
      ),
      meta,
      failures,
    );
    let shownFailures = -1;

    function update(job) {
      const running = ACTIVE.has(job.state);
      root.className = `job-card state-${job.state}`;
      badge.className = `state-badge ${job.state}`;
      badge.textContent = job.state;
      name.replaceChildren(
        job.collection
          ? h("a", { href: routeHref("collections", { name: job.collection }) }, job.collection)
          : "(collection)",
      );
      where.textContent = job.source || "";
      where.title = job.source || "";
      cancel.hidden = !running;
      const finished = job.done + job.failed;
      if (job.total) {
        bar.max = job.total;
        bar.value = finished;
      } else {
        bar.removeAttribute("value"); // total unknown yet: indeterminate
      }
      bar.classList.toggle("has-failures", job.failed > 0);
      counts.replaceChildren(
        job.total ? `${finished} / ${job.total}` : `${finished} so far`,
        job.failed ? h("span", { class: "bad" }, ` · ${job.failed} failed`) : "",
      );
      meta.replaceChildren(
        job.rate !== null ? `${job.rate.toFixed(1)} items/s` : "",
        running && job.eta !== null ? ` · about ${duration(job.eta)} left` : "",
        job.error ? h("span", { class: "bad" }, ` · ${job.error}`) : "",
      );
      failures.hidden = job.failures.length === 0;
      if (job.failures.length !== shownFailures) {
        shownFailures = job.failures.length;
        const more = job.failed > job.failures.length ? ` (first ${job.failures.length} of ${job.failed})` : "";
        summary.textContent = `${job.failures.length} failure${job.failures.length === 1 ? "" : "s"}${more}`;
        failureList.replaceChildren(
          ...job.failures.map((f) => h("li", {}, h("span", { class: "mono" }, f.item), " — ", f.reason)),
        );
      }
    }

    return { root, update };
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
