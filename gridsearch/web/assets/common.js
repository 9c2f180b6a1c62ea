// Helpers shared by the pages: JSON requests, DOM building, number formats and polling.
"use strict";

const POLL_SECONDS = 2;
const STATUSES = document.body.dataset.statuses.split(" ");  // in the order pages show them

/** The JSON answer of `url`; throws an Error with the server's one-line message on a 4xx or 5xx. */
async function getJSON(url, options = {}) {
  const response = await fetch(url, { cache: "no-store", ...options });
  let body;
  try {
    body = await response.json();
  } catch {
    throw new Error(`${response.status} ${response.statusText}`);
  }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

/** A new element with attributes and children (strings become text, never HTML). */
function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** The vocabulary's number format (gridsearch/vocabulary.py): accuracies as 98.40%, counts as 10,000, epochs from 1. */
function percent(value, digits = 2) {
  return value == null ? "" : `${(100 * value).toFixed(digits)}%`;
}

function count(value) {
  return value == null ? "" : Number(value).toLocaleString("en-US");
}

/** A trial key as narrow tables show it: its first 8 characters (the whole key is in its title). */
function shortKey(key) {
  return key.slice(0, 8);
}

/** A stored epoch (counted from 0) as a person counts it, from 1. */
function epochNumber(value) {
  return value == null ? "" : String(value + 1);
}

/** A value of a sweep's select metric: accuracies as percentages, losses as numbers. */
function score(metric, value) {
  if (value == null) return "";
  return metric === "val_loss" ? value.toFixed(4) : percent(value);
}

function progressBar(finished, total) {
  const bar = element("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total,
                               "aria-valuenow": finished });
  bar.append(element("span", { style: `width: ${total ? (100 * finished) / total : 0}%` }));
  return element("div", { class: "progress" }, bar, element("small", {}, `${finished} / ${total} finished`));
}

/** Run `task` now and every POLL_SECONDS after it ends; #updated says when it last worked, or why not. */
function poll(task) {
  const status = document.getElementById("updated");
  async function again() {
    try {
      await task();
      status.textContent = `Live: updated at ${new Date().toLocaleTimeString()}, every ${POLL_SECONDS} s.`;
      status.classList.remove("error");
    } catch (error) {
      status.textContent = `Not updated: ${error.message}`;
      status.classList.add("error");
    }
    setTimeout(again, POLL_SECONDS * 1000);
  }
  again();
}
