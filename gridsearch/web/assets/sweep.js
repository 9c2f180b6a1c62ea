// The sweep page: trials table (sortable), learning curves of the ticked trials, heatmap and test result.
"use strict";

const SWEEP = document.querySelector("main").dataset.sweep;
const BASE = `/sweeps/${encodeURIComponent(SWEEP)}`;
const DEFAULT_CURVES = 3;
const MAX_ROWS = 200;       // rows of the trials table shown, after sorting
let latest = null;          // {sweep, test, trials}: the sweep as last polled, its trials merged and best first
let known = new Map();      // trial key -> entry, merged from /api/sweeps/NAME/trials?since=VERSION answers
let sortColumn = null;      // null: the server's order, best first
let ascending = true;
let ticked = null;          // trial keys whose curves are drawn; null: the best DEFAULT_CURVES so far
let analysed = null;        // the results version whose analysis is shown
const wanted = new Map();   // figure id -> the URL it should show (drawn in the background: asked until drawn)
const placeholders = new Map();  // figure id -> the note shown in its place (a refused figure's reason)

/** A param's value as a sweep file writes it; nothing for none (a param its trial's architecture does not take). */
function asWritten(value) {
  return value == null ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
}

/** The gridded params that take more than one value among the trials known (the others are said once). */
function varying(sweep) {
  return sweep.gridded.filter((name) => new Set(latest.trials.map((t) => asWritten(t.params[name]))).size > 1);
}

/** The trials table's columns: title, value of a trial, how to show it; the scores before the params, so that a
 * sweep of many params (a committee's pool of models) keeps them in view. */
function columns(sweep) {
  const number = (digits) => (v) => (v == null ? "" : v.toFixed(digits));
  return [
    { title: "curve", value: (t) => (curveKeys().includes(t.key) ? 0 : 1), cell: tickBox },
    { title: "key", value: (t) => t.key, cell: (t) => element("span", { class: "key", title: t.key }, shortKey(t.key)) },
    { title: "status", value: (t) => t.status, cell: statusCell },
    { title: "epochs", value: (t) => t.epochs_run, cell: (t) => `${t.epochs_run} / ${t.epochs}` },
    { title: "best epoch", value: (t) => t.best_epoch, show: epochNumber },
    { title: "val accuracy", value: (t) => t.val_accuracy, show: (v) => percent(v) },
    { title: "val loss", value: (t) => t.val_loss, show: number(4) },
    { title: "train s", value: (t) => t.train_seconds, show: number(1) },
    ...varying(sweep).map((name) => ({ title: name, value: (t) => t.params[name], show: asWritten })),
    { title: "seed", value: (t) => t.seed, show: String },
  ];
}

function tickBox(trial) {
  const box = element("input", { type: "checkbox", "aria-label": `learning curve of ${trial.key}` });
  box.checked = curveKeys().includes(trial.key);
  box.disabled = trial.epochs_run === 0;
  box.addEventListener("change", () => {
    const keys = new Set(curveKeys());
    if (box.checked) keys.add(trial.key); else keys.delete(trial.key);
    ticked = [...keys].slice(0, 10);
    render();
    loadFigures();
  });
  return box;
}

function statusCell(trial) {
  return element("span", { class: `status-${trial.status}`, title: trial.error || "" }, trial.status);
}

/** The ticked trials, or by default the best few that have finished an epoch. */
function curveKeys() {
  if (ticked !== null) return ticked;
  return latest.trials.filter((t) => t.epochs_run > 0).slice(0, DEFAULT_CURVES).map((t) => t.key);
}

/** The server's order: (a halving sweep's last rung first,) best score first, unscored last, then grid order. */
function bestFirst(sweep) {
  const lower = sweep.select === "val_loss";
  return (a, b) => {
    if (a.rung !== b.rung) return a.rung == null ? 1 : b.rung == null ? -1 : b.rung - a.rung;
    const x = a[sweep.select], y = b[sweep.select];
    if ((x == null) !== (y == null)) return x == null ? 1 : -1;
    if (x != null && x !== y) return lower ? x - y : y - x;
    return a.position - b.position;
  };
}

function compare(a, b) {
  if (a == null || b == null) return (a == null) - (b == null);  // missing values last, either way
  const order = typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b));
  return ascending ? order : -order;
}

function renderTable() {
  const sweep = latest.sweep;
  const cols = columns(sweep);
  const head = element("tr", {}, ...cols.map((column, index) => {
    const th = element("th", { scope: "col" }, column.title);
    if (index === sortColumn) th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    th.addEventListener("click", () => {
      ascending = sortColumn === index ? !ascending : true;
      sortColumn = index;
      renderTable();
    });
    return th;
  }));
  let trials = latest.trials;
  if (sortColumn !== null) {
    const value = cols[sortColumn].value;
    trials = [...trials].sort((a, b) => compare(value(a), value(b)));
  }
  const shown = document.getElementById("trials-shown");
  shown.hidden = trials.length <= MAX_ROWS;
  shown.textContent = `The first ${MAX_ROWS} of ${count(trials.length)} trials; sort by a column to see others.`;
  const rows = trials.slice(0, MAX_ROWS).map((trial) => element("tr", {
    "data-key": trial.key, class: trial.key === sweep.selected_trial ? "selected" : "" },
    ...cols.map((column) => {
      const value = column.value(trial);
      const content = column.cell ? column.cell(trial) : column.show(value);
      return element("td", { class: typeof value === "number" && !column.cell ? "num" : "" }, content);
    })));
  const differ = varying(sweep);
  const same = sweep.gridded.filter((name) => !differ.includes(name) && latest.trials.length
    && latest.trials[0].params[name] != null);
  const note = document.getElementById("trials-same");
  note.hidden = !same.length;
  note.textContent = `The same in every trial: ${same.map((name) => `${name}=${asWritten(latest.trials[0].params[name])}`).join(", ")}.`;
  document.querySelector("#trials thead").replaceChildren(head);
  document.querySelector("#trials tbody").replaceChildren(...rows);
}

/** Show figure `id` from `url` (none: hide it) once the server has drawn it; until then the last one stays. */
function showFigure(id, url, placeholderId) {
  if (placeholderId) placeholders.set(id, document.getElementById(placeholderId));
  if (placeholderId && document.getElementById(id).dataset.url !== url) {
    document.getElementById(placeholderId).hidden = Boolean(url);
  }
  if (!url) {
    const img = document.getElementById(id);
    img.hidden = true;
    delete img.dataset.url;  // shown again from its URL if it comes back
  }
  wanted.set(id, url);
}

/** Fetch each wanted figure not shown yet: a 202 (still being drawn) is asked again at the next poll. */
async function loadFigures() {
  for (const [id, url] of wanted) {
    const img = document.getElementById(id);
    if (!url || img.dataset.url === url) continue;
    const response = await fetch(url, { cache: "no-store" });
    if (response.status === 202) continue;
    img.dataset.url = url;
    img.hidden = !response.ok;  // a 4xx says in JSON why there is no such figure (yet)
    if (!response.ok) {
      const placeholder = placeholders.get(id);
      if (placeholder) {  // said where the figure would be, not an empty section
        placeholder.textContent = (await response.json().catch(() => ({}))).error || placeholder.textContent;
        placeholder.hidden = false;
      }
      continue;
    }
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(await response.blob());
  }
}

function renderTest() {
  const { sweep, test } = latest;
  if (!test) return;
  const trial = latest.trials.find((t) => t.key === test.trial);
  const params = varying(sweep).filter((name) => trial.params[name] != null)  // the others are said above the table
    .map((name) => `${name}=${asWritten(trial.params[name])}`).join(", ");
  document.getElementById("test").replaceChildren(
    element("p", {}, "Trial ", element("span", { class: "key" }, test.trial), ` (${params ? `${params}, ` : ""}seed ${trial.seed}): `,
            `validation ${score(sweep.select, trial[sweep.select])} at epoch ${epochNumber(trial.best_epoch)}.`),
    element("p", { class: "test-result" }, element("strong", {}, `Test accuracy ${percent(test.accuracy)}`),
            `: ${count(test.errors)} errors in ${count(test.samples)} test images, ` +
            `test loss ${test.loss.toFixed(4)}.`),
    element("p", {}, element("a", { href: `/recognizer?trial=${test.trial}` }, "Draw a digit for this model →"), " · ",
            element("a", { href: `/trials/${test.trial}/learned` }, "What it learned →")));
}

/** The variance decomposition and the winner's margin, fetched again only when the sweep's results changed. */
async function renderAnalysis() {
  const version = latest.sweep.results_version;
  if (analysed === version) return;
  const analysis = await getJSON(`/api/sweeps/${encodeURIComponent(SWEEP)}/analysis`);
  if (analysis.state === "computing") {  // computed in the background: asked again at the next poll
    if (analysed === null) document.getElementById("margin").textContent = "Computing the analysis…";
    return;
  }
  analysed = version;
  const v = encodeURIComponent(version);
  const margin = document.getElementById("margin");
  margin.textContent = analysis.margin ? analysis.margin.text : analysis.notes.margin;
  margin.classList.toggle("note", !analysis.margin);
  const found = analysis.importance;
  document.getElementById("importance-note").textContent = found
    ? `${found.exact ? "Exact functional ANOVA over the complete grid" : "A random-forest estimate (the grid is incomplete)"}: ` +
      `the share of the variance of ${found.metric} each gridded param and pair carries (${found.basis}); ` +
      "beside it, every trial as one line through its params, coloured by the metric."
    : analysis.notes.importance;
  showFigure("importance", found ? `${BASE}/importance.png?v=${v}` : null);
  showFigure("parallel", found ? `${BASE}/parallel.png?v=${v}` : null);
  renderCommittee(analysis.committee);
}

/** The committee `evaluate --ensemble` stored for the sweep, member by member (none: the section stays hidden). */
function renderCommittee(committee) {
  document.getElementById("committee-section").hidden = !committee;
  if (!committee) return;
  const size = committee.members.length;
  document.getElementById("committee-note").replaceChildren(
    element("strong", {}, `Test accuracy ${percent(committee.accuracy)}`),
    `: ${count(committee.errors)} errors in ${count(committee.samples)} test images, the softmax probabilities of ` +
    `the ${size === 1 ? "best done trial" : `${size} best done trials`} of ${count(committee.candidates)} by ` +
    `validation averaged (evaluation ${committee.name} of the selected trial).`);
  const apart = committee.members.some((m) => m.params);  // what sets members apart, when anything does
  const titles = ["key", "architecture", ...(apart ? ["params"] : []), "seed", "sweeps", "val accuracy",
                  "test accuracy"];
  document.querySelector("#committee thead").replaceChildren(
    element("tr", {}, ...titles.map((title) => element("th", { scope: "col" }, title))));
  document.querySelector("#committee tbody").replaceChildren(...committee.members.map((m) => element("tr",
    { "data-key": m.key }, element("td", {}, element("span", { class: "key", title: m.key }, shortKey(m.key))),
    element("td", {}, m.architecture), ...(apart ? [element("td", {}, m.params)] : []),
    element("td", { class: "num" }, String(m.seed)),
    element("td", { class: "wrap" }, ...m.sweeps.flatMap((name, i) => [i ? ", " : "",
      element("a", { href: `/sweeps/${encodeURIComponent(name)}` }, name)])),
    element("td", { class: "num" }, percent(m.val_accuracy)),
    element("td", { class: "num", title: m.test_accuracy == null ? "not tested alone" : "" },
            percent(m.test_accuracy)))));
  const others = document.getElementById("committee-others");
  others.hidden = !committee.others.length;
  others.textContent = `The evaluation is stored on the selected trial, which ${committee.others.join(", ")} ` +
    `${committee.others.length === 1 ? "selects" : "select"} too, with other ${size} best: the committee may have ` +
    "been built for one of them.";
}

/** A sweep of several objectives: its front as a table, and a scatter of the two objectives chosen. */
let fronted = null;         // the results version whose front is shown
async function renderFront() {
  const version = latest.sweep.results_version;
  if (fronted === version) return;
  const front = await getJSON(`/api/sweeps/${encodeURIComponent(SWEEP)}/front`);
  if (front.state === "computing") return;
  fronted = version;
  document.getElementById("front-section").hidden = front.objectives.length < 2;
  if (front.objectives.length < 2) return;
  const [x, y] = [document.getElementById("front-x"), document.getElementById("front-y")];
  if (!x.options.length) {
    for (const [select, chosen] of [[x, front.objectives.length - 1], [y, 0]]) {
      select.append(...front.objectives.map((o, i) => new Option(o.label, o.metric, false, i === chosen)));
      select.addEventListener("change", () => { showFront(); loadFigures(); });
    }
  }
  document.getElementById("front-note").textContent = front.note ||
    `${front.front.length} of ${front.points} points on the front; selected by ${front.rule}.`;
  const show = (metric, value) => (metric === "val_accuracy" ? percent(value)
    : metric === "parameters" ? count(Math.round(value)) : value.toPrecision(4));
  document.querySelector("#front-table thead").replaceChildren(element("tr", {},
    ...["key", "params", ...front.objectives.map((o) => o.label), "test accuracy"].map((t) => element("th", {}, t))));
  document.querySelector("#front-table tbody").replaceChildren(...front.front.map((p) => element("tr",
    { class: p.selected ? "selected" : "" }, element("td", { class: "key" }, p.key), element("td", {}, p.params),
    ...front.objectives.map((o) => element("td", { class: "num" }, show(o.metric, p.values[o.metric]))),
    element("td", { class: "num" }, percent(p.test_accuracy)))));
  showFront();
}

function showFront() {
  const [x, y] = [document.getElementById("front-x").value, document.getElementById("front-y").value];
  const v = encodeURIComponent(latest.sweep.results_version);
  showFigure("front", x !== y ? `${BASE}/front.png?x=${x}&y=${y}&v=${v}` : null);
}

function render() {
  const { sweep } = latest;
  const v = encodeURIComponent(sweep.version);
  const r = encodeURIComponent(sweep.results_version);
  document.getElementById("summary").textContent =
    `${sweep.architecture}${sweep.dataset ? ` on ${sweep.dataset}` : ""} · ` +
    `${sweep.trials} ${sweep.trials === 1 ? "trial" : "trials"} ` +
    `over ${varying(sweep).join(", ") || sweep.gridded.join(", ") || "no gridded param"} · ` +
    `best by ${sweep.select} · ` + STATUSES.filter((s) => sweep[s]).map((s) => `${sweep[s]} ${s}`).join(", ");
  document.getElementById("progress").replaceChildren(progressBar(sweep.finished, sweep.trials));
  renderTable();
  const keys = curveKeys();
  showFigure("curves", keys.length ? `${BASE}/curves.png?trials=${keys.join(",")}&v=${v}` : null, "no-curves");
  if (!sweep.heatmap) {
    document.getElementById("no-heatmap").textContent = sweep.gridded.length < 2
      ? `This sweep grids ${sweep.gridded.length ? "only " + sweep.gridded[0] : "no param"}: a heatmap needs two.`
      : "The heatmap appears once the trials trained so far cover two values of two gridded params.";
  }
  showFigure("heatmap", sweep.heatmap ? `${BASE}/heatmap.png?v=${r}` : null, "no-heatmap");
  // a finished sweep with no heatmap to come: no section for it (the test result takes the row)
  document.getElementById("hyperparameters").hidden = !sweep.heatmap && sweep.finished === sweep.trials;
  showFigure("confusion", latest.test ? `${BASE}/confusion.png?v=${r}` : null);
  renderTest();
}

/** Merge an answer of the trials endpoint (every trial, or those changed since our version) into `known`. */
function merge(answer) {
  if (answer.since === null) known = new Map();
  for (const key of answer.removed) known.delete(key);
  for (const trial of answer.trials) known.set(trial.key, trial);
  return { sweep: answer.sweep, test: answer.test, trials: [...known.values()].sort(bestFirst(answer.sweep)) };
}

poll(async () => {
  const since = latest ? `?since=${encodeURIComponent(latest.sweep.version)}` : "";
  const answer = await getJSON(`/api/sweeps/${encodeURIComponent(SWEEP)}/trials${since}`);
  const changed = !latest || answer.sweep.version !== latest.sweep.version;
  latest = merge(answer);
  if (changed) render();
  await renderAnalysis();
  await renderFront();
  await loadFigures();
});
