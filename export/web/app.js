// Draw-a-digit page: the preprocessing of export/images.py (crop to the ink, scale into 20x20,
// centre by mass in 28x28, white on black; scale and normalisation from the model's metadata),
// then onnxruntime-web on the exported whole-sequence model. For the browser test the page exposes
// window.digit = {ready, classify28(pixels), loadDigit(pixels), last}.
"use strict";
const SIDE = 28, DIGIT_BOX = 20, INK_THRESHOLD = 0.2;  // as in export/images.py
const pad = document.getElementById("pad"), ctx = pad.getContext("2d", { willReadFrequently: true });
const state = { session: null, meta: null, last: null, busy: false, again: false };

function clearPad() {
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height);
}

// uint8 pixels of the pad -> uint8 28x28, like fit_like_mnist: crop, scale into 20x20, centre of mass at 14,14.
function fitLikeMnist() {
  const { width, height } = pad, rgba = ctx.getImageData(0, 0, width, height).data;
  let max = 0;
  for (let i = 0; i < rgba.length; i += 4) max = Math.max(max, rgba[i]);
  const out = new Uint8Array(SIDE * SIDE);
  if (max === 0) return out;
  let top = height, left = width, bottom = -1, right = -1;
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    if (rgba[4 * (y * width + x)] > INK_THRESHOLD * max) {
      top = Math.min(top, y); bottom = Math.max(bottom, y); left = Math.min(left, x); right = Math.max(right, x);
    }
  }
  const cropW = right - left + 1, cropH = bottom - top + 1, scale = DIGIT_BOX / Math.max(cropW, cropH);
  const w = Math.max(1, Math.round(cropW * scale)), h = Math.max(1, Math.round(cropH * scale));
  const small = document.createElement("canvas");
  small.width = w; small.height = h;
  const sctx = small.getContext("2d", { willReadFrequently: true });
  sctx.imageSmoothingEnabled = true; sctx.imageSmoothingQuality = "high";
  sctx.drawImage(pad, left, top, cropW, cropH, 0, 0, w, h);
  const digit = sctx.getImageData(0, 0, w, h).data;
  let mass = 0, rowSum = 0, colSum = 0;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const v = digit[4 * (y * w + x)]; mass += v; rowSum += y * v; colSum += x * v;
  }
  mass = mass || 1;
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  const y0 = clamp(Math.round(SIDE / 2 - rowSum / mass), SIDE - h), x0 = clamp(Math.round(SIDE / 2 - colSum / mass), SIDE - w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[(y0 + y) * SIDE + x0 + x] = digit[4 * (y * w + x)];
  return out;
}

// uint8 28x28 -> float32 model input, the float32 arithmetic of export/images.preprocess (Math.fround each step).
function preprocess(pixels) {
  const pre = state.meta.preprocessing, f = Math.fround, input = new Float32Array(SIDE * SIDE);
  const divisor = f(Math.round(1 / pre.scale)), mean = f(pre.mean), std = f(pre.std);
  for (let i = 0; i < input.length; i++) {
    const x = f(pixels[i] / divisor);
    input[i] = pre.normalize ? f(f(x - mean) / std) : x;
  }
  return input;
}

function softmax(logits) {
  const max = Math.max(...logits), exp = logits.map((v) => Math.exp(v - max)), sum = exp.reduce((a, b) => a + b, 0);
  return exp.map((v) => v / sum);
}

async function classify28(pixels) {
  const input = preprocess(pixels);
  const feeds = { input: new ort.Tensor("float32", input, [1, SIDE, SIDE]) };
  const logits = Array.from((await state.session.run(feeds)).logits.data);
  state.last = { pixels: Array.from(pixels), input: Array.from(input), logits, probabilities: softmax(logits) };
  show(state.last);
  return state.last;
}

function show({ pixels, probabilities }) {
  const preview = document.getElementById("preview").getContext("2d"), image = preview.createImageData(SIDE, SIDE);
  pixels.forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
  preview.putImageData(image, 0, 0);
  const best = probabilities.indexOf(Math.max(...probabilities)), labels = state.meta.class_labels;
  document.getElementById("answer").textContent = `${labels[best]} (${(100 * probabilities[best]).toFixed(1)}%)`;
  document.getElementById("bars").innerHTML = probabilities.map((p, k) =>
    `<div class="bar${k === best ? " best" : ""}"><span>${labels[k]}</span><div style="width:${Math.round(200 * p)}px"></div>` +
    `<span>${p.toFixed(3)}</span></div>`).join("");
}

async function classifyPad() {  // one run at a time; strokes drawn meanwhile trigger one more
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  try { do { state.again = false; await classify28(fitLikeMnist()); } while (state.again); } finally { state.busy = false; }
}

function loadDigit(pixels) {  // a 28x28 uint8 image, drawn 10x onto the pad, then classified like a drawing
  const small = document.createElement("canvas");
  small.width = small.height = SIDE;
  const image = small.getContext("2d").createImageData(SIDE, SIDE);
  pixels.forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
  small.getContext("2d").putImageData(image, 0, 0);
  clearPad();
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, pad.width, pad.height);
  return classifyPad().then(() => state.last);
}

function setUpDrawing() {
  let drawing = false;
  const at = (e) => { const r = pad.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  pad.addEventListener("pointerdown", (e) => {
    drawing = true; pad.setPointerCapture(e.pointerId);
    ctx.beginPath(); ctx.moveTo(...at(e)); ctx.lineTo(...at(e)); ctx.stroke();
  });
  pad.addEventListener("pointermove", (e) => { if (drawing) { ctx.lineTo(...at(e)); ctx.stroke(); classifyPad(); } });
  pad.addEventListener("pointerup", () => { drawing = false; classifyPad(); });
  document.getElementById("clear").addEventListener("click", () => { clearPad(); classifyPad(); });
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 18; ctx.lineCap = ctx.lineJoin = "round";
}

async function start() {
  clearPad(); setUpDrawing();
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
  ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation; one digit is small work
  state.meta = await (await fetch("model.json")).json();
  state.session = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
  document.getElementById("variant").textContent = `(${state.meta.variant}, onnxruntime-web ${ort.env.versions.web})`;
  document.getElementById("status").textContent = "draw with the mouse or a finger";
  await classifyPad();
  window.digit.ready = true;
}

window.digit = { ready: false, classify28, loadDigit, get last() { return state.last; }, get busy() { return state.busy; } };
start().catch((error) => {
  document.getElementById("status").textContent = `error: ${error.message}`;
  window.digit.error = String(error.message || error);
});
