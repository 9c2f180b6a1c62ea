// The sweeps page: one row per sweep with its trial counts, following the database.
"use strict";

function sweepRow(sweep) {
  const link = element("a", { href: `/sweeps/${encodeURIComponent(sweep.name)}` }, sweep.name);
  const selected = !sweep.selected_trial ? ""
    : sweep.digits
      ? element("a", { class: "key", href: `/recognizer?trial=${sweep.selected_trial}`, "data-key": sweep.selected_trial,
                       title: `${sweep.selected_trial}: draw a digit for this model` }, shortKey(sweep.selected_trial))
      : element("a", { class: "key", href: `/trials/${sweep.selected_trial}/learned`, "data-key": sweep.selected_trial,
                       title: `${sweep.selected_trial}: what this model learned (${sweep.dataset}: no digits to draw)` },
                shortKey(sweep.selected_trial));
  return element("tr", { "data-sweep": sweep.name },
    element("td", {}, link),
    element("td", { class: "wrap" }, sweep.dataset ? `${sweep.architecture} on ${sweep.dataset}` : sweep.architecture),
    element("td", {}, progressBar(sweep.finished, sweep.trials)),
    element("td", { class: "num", title: sweep.select || "" }, score(sweep.select, sweep.best)),
    element("td", {}, selected),
    ...STATUSES.map((status) => element("td", { class: sweep[status] ? "num" : "num zero", "data-count": status },
                                        String(sweep[status]))));
}

async function refresh() {
  const data = await getJSON("/api/sweeps");
  document.getElementById("empty").hidden = data.sweeps.length > 0;
  document.querySelector("#sweeps tbody").replaceChildren(...data.sweeps.map(sweepRow));
  for (const status of STATUSES) {  // a status no sweep has is no column (as in `status`)
    const none = data.sweeps.every((sweep) => !sweep[status]);
    for (const cell of document.querySelectorAll(`#sweeps [data-count="${status}"]`)) cell.hidden = none;
  }
}

poll(refresh);
