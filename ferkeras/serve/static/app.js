// ferkeras serve: the webcam page. No external resources: everything is same-origin.
"use strict";

const MAX_SIDE = 480;        // frames are scaled down to this longer side before sending
const JPEG_QUALITY = 0.85;
const BOX_COLOUR = "#00e0a0";
const $ = (id) => document.getElementById(id);

const page = {               // read by the browser test (tests/test_serve_browser.py)
  frames: 0, lastResult: null, lastBoxes: [], lastError: null, classes: [],
};
window.ferkerasPage = page;

let apiKey = sessionStorage.getItem("ferkeras-api-key") || "";
let stream = null;
let busy = false;

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

async function api(path, options) {
  const opts = Object.assign({headers: {}}, options || {});
  if (apiKey) opts.headers["X-API-Key"] = apiKey;
  const response = await fetch(path, opts);
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (response.status === 401) $("key-row").hidden = false;
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

async function loadModel() {
  try {
    const model = await api("/v1/model");
    page.classes = model.classes;
    $("model").textContent = `${model.id} · ${model.classes.length} classes · ` +
      `detector ${model.detector}`;
  } catch (err) {
    $("model").textContent = `model: ${err.message}`;
  }
}

// ------------------------------------------------------------------ drawing
function drawFaces(records, scale, width, height) {
  const overlay = $("overlay");
  overlay.width = width;
  overlay.height = height;
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const line = Math.max(2, Math.round(width / 200));
  const font = Math.max(12, Math.round(width / 28));
  ctx.lineWidth = line;
  ctx.font = `${font}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  page.lastBoxes = [];
  for (const record of records) {
    if (!record.box) continue;
    const [x, y, w, h] = record.box.map((v) => v * scale);
    ctx.strokeStyle = BOX_COLOUR;
    ctx.strokeRect(x, y, w, h);
    const text = `${record.label} ${(record.score * 100).toFixed(0)}%`;
    const tw = ctx.measureText(text).width + 8;
    const ty = y > font + 4 ? y : y + h + font + 4;
    ctx.fillStyle = BOX_COLOUR;
    ctx.fillRect(x - line / 2, ty - font - 4, tw, font + 4);
    ctx.fillStyle = "#002a1e";
    ctx.fillText(text, x + 4, ty - 2);
    page.lastBoxes.push([x, y, w, h, line]);
  }
}

function listFaces(records) {
  const list = $("faces");
  list.replaceChildren();
  for (const record of records) {
    const item = document.createElement("li");
    if (record.error) {
      item.textContent = record.error;
      item.dataset.label = "";
      list.append(item);
      continue;
    }
    item.dataset.label = record.label;
    const top = document.createElement("div");
    top.className = "top";
    top.textContent = `${record.label} ${(record.score * 100).toFixed(1)}%`;
    item.append(top);
    for (const [name, prob] of Object.entries(record.scores)) {
      const bar = document.createElement("div");
      bar.className = name === record.label ? "bar best" : "bar";
      const label = document.createElement("span");
      label.textContent = name;
      const track = document.createElement("div");
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${(prob * 100).toFixed(1)}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.textContent = `${(prob * 100).toFixed(0)}%`;
      bar.append(label, track, value);
      item.append(bar);
    }
    list.append(item);
  }
}

function show(result, scale, width, height, started) {
  page.lastResult = result;
  page.lastError = null;
  page.frames += 1;
  drawFaces(result.records, scale, width, height);
  listFaces(result.records);
  const faces = result.records.filter((r) => !r.error).length;
  setStatus(`${faces} face(s) · ${Math.round(performance.now() - started)} ms`);
}

async function predict(blob) {
  return api("/v1/predict", {method: "POST", body: blob,
                             headers: {"Content-Type": blob.type || "image/jpeg"}});
}

// ------------------------------------------------------------------ camera
async function startCamera() {
  if (stream) { stopCamera(); return; }
  try {
    stream = await navigator.mediaDevices.getUserMedia(
      {video: {width: {ideal: 640}, height: {ideal: 480}}, audio: false});
  } catch (err) {
    setStatus(`camera: ${err.message}`, true);
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  video.hidden = false;
  $("still").hidden = true;
  $("placeholder").hidden = true;
  await video.play();
  $("camera").textContent = "Stop camera";
  requestAnimationFrame(sendFrame);
}

function stopCamera() {
  for (const track of stream.getTracks()) track.stop();
  stream = null;
  $("camera").textContent = "Start camera";
}

function sendFrame() {
  if (!stream) return;
  const video = $("video");
  if (busy || !video.videoWidth) { setTimeout(sendFrame, 30); return; }
  const scale = Math.min(1, MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  busy = true;
  const started = performance.now();
  canvas.toBlob(async (blob) => {
    try {
      const result = await predict(blob);
      if (stream) show(result, 1 / scale, video.videoWidth, video.videoHeight, started);
    } catch (err) {
      page.lastError = err.message;
      setStatus(err.message, true);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    } finally {
      busy = false;
      setTimeout(sendFrame, 0);
    }
  }, "image/jpeg", JPEG_QUALITY);
}

// ------------------------------------------------------------------ still images
async function predictFile(file) {
  if (!file) return;
  if (stream) stopCamera();
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (err) {
    setStatus(`${file.name}: not an image this browser can show`, true);
    return;
  }
  const still = $("still");
  still.width = bitmap.width;
  still.height = bitmap.height;
  still.getContext("2d").drawImage(bitmap, 0, 0);
  still.hidden = false;
  $("video").hidden = true;
  $("placeholder").hidden = true;
  const started = performance.now();
  setStatus(`${file.name}: sending…`);
  try {
    const accepted = ["image/jpeg", "image/png", "image/webp"].includes(file.type);
    const blob = accepted ? file : await new Promise(
      (resolve) => still.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    const form = new FormData();  // multipart: the answer's `source` is the file's name
    form.append("image", blob, file.name);
    show(await api("/v1/predict", {method: "POST", body: form}), 1, bitmap.width,
         bitmap.height, started);
  } catch (err) {
    page.lastError = err.message;
    setStatus(err.message, true);
  }
}

function wire() {
  $("camera").addEventListener("click", startCamera);
  $("file").addEventListener("change", (e) => predictFile(e.target.files[0]));
  const stage = $("stage");
  stage.addEventListener("dragover", (e) => { e.preventDefault(); stage.classList.add("drag"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("drag"));
  stage.addEventListener("drop", (e) => {
    e.preventDefault();
    stage.classList.remove("drag");
    predictFile(e.dataTransfer.files[0]);
  });
  $("key").value = apiKey;
  $("key-save").addEventListener("click", () => {
    apiKey = $("key").value.trim();
    sessionStorage.setItem("ferkeras-api-key", apiKey);
    $("key-row").hidden = true;
    loadModel();
  });
  $("still").hidden = true;
  loadModel();
  if (new URLSearchParams(location.search).has("camera")) startCamera();
}

document.addEventListener("DOMContentLoaded", wire);
