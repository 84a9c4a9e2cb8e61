// ScrewOps console: the two things a server-rendered page cannot do by itself. Everything else
// (uploading, labeling, promoting) is a plain form that works without this script.
"use strict";

// Inspection: the threshold slider re-classifies the results by their defect probability,
// Bad at or above the threshold (the gateway's own rule), without asking the gateway again.
function reclassify() {
  const slider = document.getElementById("threshold");
  if (!slider) return;
  const threshold = parseFloat(slider.value);
  const shown = document.getElementById("threshold-value");
  if (shown) shown.textContent = threshold.toFixed(2);
  let good = 0;
  let bad = 0;
  for (const card of document.querySelectorAll(".card[data-probability]")) {
    const isBad = parseFloat(card.dataset.probability) >= threshold;
    card.classList.toggle("bad", isBad);
    card.classList.toggle("good", !isBad);
    card.querySelector(".verdict").textContent = isBad ? "Bad" : "Good";
    if (isBad) bad += 1; else good += 1;
  }
  const goodCount = document.getElementById("good-count");
  const badCount = document.getElementById("bad-count");
  if (goodCount) goodCount.textContent = String(good);
  if (badCount) badCount.textContent = String(bad);
}

// Labeling: key 1 labels the shown image good, key 2 bad (not while typing in a field).
function labelKeys(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (event.target instanceof Element && event.target.closest("input, textarea, select")) return;
  const id = { "1": "label-good", "2": "label-bad" }[event.key];
  const button = id ? document.getElementById(id) : null;
  if (!button || button.disabled) return;
  event.preventDefault();
  button.click();
}

// A submitted form's buttons are disabled, so a double key press or click sends one request.
function oncePerSubmit(event) {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
  if (form.dataset.sent) { event.preventDefault(); return; }
  form.dataset.sent = "1";
  setTimeout(() => form.querySelectorAll("button").forEach((b) => { b.disabled = true; }), 0);
}

document.addEventListener("DOMContentLoaded", () => {
  const slider = document.getElementById("threshold");
  if (slider) slider.addEventListener("input", reclassify);
  document.addEventListener("keydown", labelKeys);
  document.addEventListener("submit", oncePerSubmit);
});
