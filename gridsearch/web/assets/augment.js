// The augmentation explorer: sliders -> the server augments real digits with the engine's augmenter.
"use strict";

const form = document.getElementById("params");
const image = document.getElementById("augmented");
let seed = 0;
let asked = 0;

/** The query of the current values: each param once, zoom as "low,high". */
function query() {
  const values = {};
  for (const input of form.querySelectorAll("input[type=range]")) {
    input.nextElementSibling.textContent = input.value;
    if (input.dataset.end === undefined) values[input.name] = input.value;
    else (values[input.name] ??= [])[+input.dataset.end] = input.value;
  }
  if (values.zoom && +values.zoom[0] > +values.zoom[1]) values.zoom.reverse();  // low never above high
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) params.set(name, Array.isArray(value) ? value.join(",") : value);
  return params;
}

async function update() {
  const params = query();
  const number = (asked += 1);
  try {
    const answer = await getJSON(`/api/augment?${params}`);
    if (number !== asked) return;
    document.getElementById("yaml").textContent = answer.yaml;
    params.set("seed", seed);
    params.set("rows", document.getElementById("rows").value);
    if (image) image.src = `/augment.png?${params}`;  // absent without test images: the page says so
    message("");
  } catch (error) {
    if (number === asked) message(error.message, true);
  }
}

function message(text, isError = false) {
  const line = document.getElementById("message");
  line.textContent = text;
  line.classList.toggle("error", isError);
}

form.addEventListener("input", update);
form.addEventListener("reset", () => setTimeout(update));
document.getElementById("redraw").addEventListener("click", () => { seed += 1; update(); });
update();
