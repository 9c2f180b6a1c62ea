// The recognizer: draw on the pad; on release the server makes it an MNIST digit and classifies it.
"use strict";

const strokeInput = document.getElementById("stroke");  // 22 by default on the 280-pixel pad: about MNIST's stroke
const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
const modelSelect = document.getElementById("model");
const digitOutput = document.getElementById("digit");
const saliencyCanvas = document.getElementById("saliency");
const saliencyToggle = document.getElementById("show-saliency");
const seen = document.getElementById("seen");    // the drawing as the model's input, at its size
let last = null;           // the pen's previous point while drawing
let inked = false;
let asked = 0;             // requests sent; only the answer to the latest is shown

function message(text, isError = false) {
  const line = document.getElementById("message");
  line.textContent = text;
  line.classList.toggle("error", isError);
  line.classList.remove("feedback");
}

function clearPad() {
  pen.fillStyle = "white";
  pen.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  asked += 1;  // an answer still on its way is for a drawing that is gone
  digitOutput.dataset.asked = digitOutput.dataset.answered = String(asked);
  digitOutput.textContent = "?";
  saliencyCaption();
  document.getElementById("bars").replaceChildren(...bars(null));
  for (const canvas of [document.getElementById("seen"), saliencyCanvas]) {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }
}

function position(event) {
  const box = pad.getBoundingClientRect();
  return [((event.clientX - box.left) * pad.width) / box.width, ((event.clientY - box.top) * pad.height) / box.height];
}

function strokeTo(point) {
  pen.strokeStyle = "black";
  pen.lineWidth = Number(strokeInput.value);
  pen.lineCap = pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(...last);
  pen.lineTo(...point);
  pen.stroke();
  last = point;
  inked = true;
}

/** A round dot of the stroke's width at `point`: what a tap leaves (a zero-length line draws nothing). */
function dot(point) {
  pen.fillStyle = "black";
  pen.beginPath();
  pen.arc(...point, Number(strokeInput.value) / 2, 0, 2 * Math.PI);
  pen.fill();
  inked = true;
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  last = position(event);
  dot(last);
});
pad.addEventListener("pointermove", (event) => {
  if (last === null) return;
  for (const each of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) strokeTo(position(each));
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (last === null) return;
    last = null;
    recognize();
  });
}

/** A row of bars per class (ten digits until a model answers); empty when `probabilities` is null. */
function bars(probabilities) {
  const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  return [...Array(probabilities ? probabilities.length : 10).keys()].map((digit) => {
    const p = probabilities ? probabilities[digit] : 0;
    return element("div", { class: digit === top ? "barrow top" : "barrow", "data-digit": digit },
      element("span", {}, String(digit)),
      element("span", { class: "track" }, element("span", { class: "fill", style: `width: ${100 * p}%` })),
      element("span", { class: "value" }, probabilities ? percent(p, 1) : ""));
  });
}

/** Paint an array of rows on `canvas`, made its size (the model's input size): `colour(value)` gives [r, g, b, a]. */
function paint(canvas, rows, colour) {
  canvas.height = rows.length;
  canvas.width = rows[0].length;
  const image = canvas.getContext("2d").createImageData(canvas.width, canvas.height);
  rows.flat().forEach((value, index) => image.data.set(colour(value), 4 * index));
  canvas.getContext("2d").putImageData(image, 0, 0);
}

function saliencyCaption() {
  document.getElementById("seen-caption").textContent = saliencyToggle.checked && digitOutput.textContent !== "?"
    ? `Red: where erasing ink lowers the model's confidence in ${digitOutput.textContent} most`
    : `What the model sees (${seen.width}×${seen.height})`;
}

function show(result) {
  digitOutput.textContent = String(result.digit);
  saliencyCaption();
  document.getElementById("bars").replaceChildren(...bars(result.probabilities));
  paint(document.getElementById("seen"), result.input, (v) => [255 - v, 255 - v, 255 - v, 255]);
  paint(saliencyCanvas, result.saliency, (s) => [230, 30, 30, Math.round(200 * s)]);
  message(result.feedback || "");
  document.getElementById("message").classList.toggle("feedback", Boolean(result.feedback));
}

async function recognize() {
  if (!inked || !modelSelect.value) return;
  const number = (asked += 1);
  digitOutput.dataset.asked = String(number);
  try {
    const result = await getJSON("/api/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: pad.toDataURL("image/png"), trial: modelSelect.value }),
    });
    if (number === asked) show(result);
  } catch (error) {
    if (number === asked) message(error.message, true);
  } finally {
    if (number === asked) digitOutput.dataset.answered = String(number);
  }
}

async function loadModels() {
  const { default: best, models } = await getJSON("/api/models");
  if (!models.length) {
    message("No tested model in the database yet: run a sweep to the end (its best trial is tested), " +
            "then reload.", true);
    return;
  }
  const wanted = new URLSearchParams(location.search).get("trial");
  modelSelect.replaceChildren(...models.map((m) => element("option", { value: m.trial },
    `${m.sweep}: ${m.architecture}, test ${percent(m.test_accuracy)}${m.trial === best ? " (best)" : ""}`)));
  modelSelect.value = best;
  if (wanted === null || models.some((m) => m.trial === wanted)) {
    if (wanted !== null) modelSelect.value = wanted;
    return;
  }
  try {  // a done trial that is not a sweep's tested one can still be used; anything else is said, not hidden
    const m = await getJSON(`/api/models/${encodeURIComponent(wanted)}`);
    modelSelect.append(element("option", { value: m.trial },
      `trial ${m.trial}: ${m.architecture}, validation ${percent(m.val_accuracy)} (not tested)`));
    modelSelect.value = m.trial;
  } catch (error) {
    message(`?trial=${wanted} cannot be used (${error.message}); showing the default model instead.`, true);
    document.getElementById("message").dataset.trialRefused = "1";
  }
}

modelSelect.addEventListener("change", recognize);
saliencyToggle.addEventListener("change", () => {
  saliencyCanvas.hidden = !saliencyToggle.checked;
  document.getElementById("legend").style.visibility = saliencyToggle.checked ? "visible" : "hidden";
  saliencyCaption();
});
document.getElementById("clear").addEventListener("click", clearPad);
strokeInput.addEventListener("input", () => { document.getElementById("stroke-width").value = strokeInput.value; });
clearPad();
loadModels().catch((error) => message(error.message, true));
