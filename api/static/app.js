// The search page: POST /similar with the photo and/or text, then draw the category and the results;
// a result's "More like this" asks GET /listings/{id}/similar for the listings like it.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search-form");
const photo = $("photo");
const status = $("status");
const price = new Intl.NumberFormat("en-GB", { style: "currency", currency: "GBP" });
const percent = (p) => `${(100 * p).toFixed(1)}%`;
// the API's field names, as the page labels its fields (a refusal names the field to mend)
const LABELS = { txt: "Description", img: "Photo", min_price: "Min price", max_price: "Max price", k: "Results" };
// only outside the quoted values a refusal echoes: a photo named 'img-1.txt' keeps its name
const inPageWords = (detail) => String(detail)
  .split(/('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")/)
  .map((part, i) => (i % 2 ? part : part.replace(/\b(txt|img|min_price|max_price|k)\b/g, (name) => LABELS[name])))
  .join("");
const counted = (n) => (n === 0 ? "No listings" : n === 1 ? "1 listing" : `${n} listings`);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

let limits = null;  // GET /limits: what one request may carry, checked here before sending

async function loadLimits() {
  try {
    const response = await fetch("/limits");
    if (response.ok) limits = await response.json();
  } catch (error) {
    // the server is not answering: loadCategories says so
  }
}

const megabytes = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MB`;

// What in one field the server would refuse, in the page's words; "" when nothing.
function descriptionProblem() {
  const chars = [...$("text").value.trim()].length;  // characters, as the server counts them: an emoji is one, not two UTF-16 units
  if (chars <= limits.max_text_chars) return "";
  return `Description: ${chars.toLocaleString("en-GB")} characters, at most ${limits.max_text_chars.toLocaleString("en-GB")}.`;
}

function photoProblem() {
  const files = [...photo.files];
  if (files.length > limits.max_photos) return `Photo: ${files.length} photos, at most ${limits.max_photos}.`;
  // a file of a type the browser does not know is left to the server, which reads its bytes
  const other = files.find((file) => file.type && !file.type.startsWith("image/"));
  if (other) return `Photo: ${other.name} is not an image.`;
  const big = files.find((file) => file.size > limits.max_photo_bytes);
  if (big) return `Photo: ${big.name} is ${megabytes(big.size)}, at most ${megabytes(limits.max_photo_bytes)}.`;
  // the request carries each photo's part headers and the other fields too: a few hundred bytes each, allowed for
  const total = files.reduce((sum, file) => sum + file.size, 0) + 1024 * (files.length + 8) + new Blob([$("text").value]).size;
  if (total > limits.max_request_bytes) return `Photos: ${megabytes(total)} in all, at most ${megabytes(limits.max_request_bytes)} per search.`;
  return "";
}

function resultsProblem() {
  const k = $("k").value.trim();  // empty: the page's default
  if (k === "" || (/^[0-9]+$/.test(k) && Number(k) >= 1 && Number(k) <= limits.max_k)) return "";
  return `Results: a whole number from 1 to ${limits.max_k}.`;
}

const CHECKS = { text: descriptionProblem, photo: photoProblem, k: resultsProblem };

// Check the fields named (all by default): each problem is marked on its field (aria-invalid), the
// first is said in the status line, and a problem said before and mended since is unsaid. Returns
// the first problem; "" when none.
function showProblems(ids = Object.keys(CHECKS)) {
  const problems = ids.map((id) => {
    const problem = limits ? CHECKS[id]() : "";
    $(id).setAttribute("aria-invalid", String(Boolean(problem)));
    return problem;
  });
  const first = problems.find(Boolean) ?? "";
  if (first || status.dataset.limit) status.textContent = first;
  status.dataset.limit = first ? "shown" : "";
  return first;
}

async function loadCategories() {
  try {
    const response = await fetch("/categories");
    if (!response.ok) return;
    const { categories } = await response.json();
    for (const name of categories) $("category").append(new Option(name, name));
  } catch (error) {
    status.textContent = "The server is not answering.";
  }
}

// Every chosen photo as a thumbnail (a listing may carry several); a file the browser cannot draw
// shows none: one that is not an image is named at once (photoProblem), any other by the server.
function showPreview() {
  const files = [...photo.files];
  const box = $("preview");
  for (const old of box.querySelectorAll("img")) URL.revokeObjectURL(old.src);
  box.replaceChildren(...files.map((file, number) => {
    const thumbnail = document.createElement("img");
    thumbnail.alt = files.length > 1 ? `chosen photo ${number + 1}` : "the chosen photo";
    thumbnail.addEventListener("error", () => {  // not a picture the browser draws
      URL.revokeObjectURL(thumbnail.src);
      thumbnail.remove();
      box.hidden = !box.querySelector("img");
    });
    thumbnail.src = URL.createObjectURL(file);
    return thumbnail;
  }));
  box.hidden = !files.length;
  $("drop-hint").textContent = files.length > 1 ? `${files.length} photos` : (files[0]?.name ?? "Choose or drop a photo");
}

// What the user should know of how far to trust the category: a description with no word the model
// knows, or a category under even odds (0.5: UNCERTAIN_BELOW of combined_model/inference.py, which the
// command line uses); and a description typed but not used.
function caveats(prediction, typed) {
  const notes = [];
  if (prediction.low_confidence) notes.push("low confidence: no word of the description is known");
  else if (prediction.probabilities[0] < 0.5) notes.push(`uncertain: ${prediction.classes[1]} is ${percent(prediction.probabilities[1])}`);
  if (typed && !prediction.modalities.includes("text")) notes.push("the description is not used: no word of it is known");
  return notes.length ? ` (${notes.join("; ")})` : "";
}

function drawPrediction(prediction, typed) {
  $("pred").textContent = prediction.pred;
  const used = prediction.modalities.join(" + ") || "nothing";
  $("modalities").textContent = `from the ${used}${caveats(prediction, typed)}`;
  const bars = $("bars");
  bars.replaceChildren();
  prediction.classes.slice(0, 5).forEach((name, i) => {
    const p = prediction.probabilities[i];
    const row = element("li", "bar-row");
    row.append(element("span", "bar-label", name));
    const track = element("span", "bar-track");
    const bar = element("span", "bar");
    bar.style.width = percent(p);
    track.append(bar);
    row.append(track, element("span", "bar-value", percent(p)));
    bars.append(row);
  });
  $("prediction").hidden = false;
}

function drawResults(results) {
  const grid = $("results");
  grid.replaceChildren();
  for (const listing of results) {
    const card = element("article", "result-card");
    const picture = element("div", listing.image_ids.length ? "thumb" : "thumb empty");
    if (listing.image_ids.length) {
      const img = element("img");
      img.loading = "lazy";
      img.alt = "";  // the title is right below it
      img.src = `/images/${encodeURIComponent(listing.image_ids[0])}`;
      picture.append(img);
    } else {
      picture.append(element("span", "muted", "no photo"));
    }
    card.append(picture);
    const body = element("div", "card-body");
    body.append(
      element("h3", "title", listing.title || "(untitled)"),
      element("p", "price", listing.price === null ? "price not given" : price.format(listing.price)),
      element("p", "location muted", listing.location),
      element("p", "category muted", listing.category),
      element("p", "score muted", `score ${listing.score.toFixed(2)}`),
    );
    // not a percentage: an unrelated listing's embeddings alone score about 0.5
    body.lastChild.title = "similarity in [0, 1]: the embeddings' cosine, rescaled, blended with the two texts' word cosine when the query has text";
    const more = element("button", "more-like secondary", "More like this");
    more.type = "button";
    more.setAttribute("aria-label", `More like “${listing.title || "(untitled)"}”`);
    more.addEventListener("click", () => moreLike(listing));
    body.append(more);
    card.append(body);
    grid.append(card);
  }
  $("no-results").hidden = results.length > 0;
  $("results-section").hidden = false;
}

function filters() {
  const fields = [["k", $("k").value.trim() || "12"]];
  for (const [id, field] of [["category", "category"], ["min-price", "min_price"], ["max-price", "max_price"]]) {
    if ($(id).value) fields.push([field, $(id).value]);
  }
  return fields;
}

let running = null;  // the AbortController of the search on its way: a later search, or Clear, aborts it

// Fetch one search and draw it: "answered"; "refused" when refused or failed (said in the status);
// "superseded" when a later search was asked for meanwhile (its answer is the one the user wants).
// Search stays enabled meanwhile: clicked again, it aborts this search for the new one.
async function ask(url, options, onAnswer) {
  running?.abort();
  const controller = running = new AbortController();
  status.textContent = "Searching…";
  try {
    const response = await fetch(url, { ...options, signal: controller.signal });
    const answer = await response.json();
    if (controller.signal.aborted) return "superseded";
    if (!response.ok) {
      clearAnswer();  // the results of an earlier search are not the answer to this one
      status.textContent = `Refused: ${inPageWords(answer.detail)}`;
      return "refused";
    }
    onAnswer(answer);
    drawResults(answer.results);
    status.textContent = `${counted(answer.results.length)}, ranked by ${answer.modalities.join(" + ")}`;
    return "answered";
  } catch (error) {
    if (controller.signal.aborted) return "superseded";  // an abort is no failure to tell
    clearAnswer();
    status.textContent = error instanceof TypeError
      ? "The server is not answering: is fbm serve running?"
      : `The search failed: ${error}`;
    return "refused";
  }
}

// On a narrow screen the status line may be below the fold once a search answers: scroll it into
// view, leaving the keyboard focus where the user is typing.
function revealStatus() {
  const { top, bottom } = status.getBoundingClientRect();
  if (top < 0 || bottom > window.innerHeight) status.scrollIntoView({ behavior: "smooth", block: "center" });
}

async function moreLike(listing) {
  const url = `/listings/${encodeURIComponent(listing.product_id)}/similar?${new URLSearchParams(filters())}`;
  const problem = showProblems(["k"]);  // of the fields checked here, only Results is sent with it
  if (problem) running?.abort();  // refused here, it is still the search the user wants now
  const outcome = problem ? "refused" : await ask(url, {}, (answer) => {
    $("prediction").hidden = true;
    $("results-heading").textContent = `Listings like “${answer.listing.title}”`;
  });
  if (outcome === "superseded") return;  // the focus stays with the search the user turned to
  // the button may be far below the form, and is gone with the old results: bring the new results,
  // or the refusal, into view, and keyboard focus with them
  const target = outcome === "answered" ? $("results-heading") : status;
  target.scrollIntoView({ behavior: "smooth", block: outcome === "answered" ? "start" : "center" });
  target.focus();
}

async function search(event) {
  event.preventDefault();
  running?.abort();  // this search, sent or refused here, is the one the user wants now
  const data = new FormData();
  for (const file of photo.files) data.append("img", file);
  const text = $("text").value.trim();
  if (text) data.append("txt", text);
  if (!photo.files.length && !text) {
    status.textContent = "Add a photo or a description first.";
    revealStatus();
    return;
  }
  if (showProblems()) {
    revealStatus();
    return;
  }
  for (const [field, value] of filters()) data.append(field, value);
  const outcome = await ask("/similar", { method: "POST", body: data }, (answer) => {
    drawPrediction(answer.prediction, Boolean(text));
    $("results-heading").textContent = "Similar listings";
  });
  if (outcome !== "superseded") revealStatus();
}

function clearAnswer() {
  $("prediction").hidden = true;
  $("results-section").hidden = true;
}

function clearAll() {
  running?.abort();  // a search still on its way is no longer wanted
  form.reset();
  showPreview();
  showProblems();
  clearAnswer();
  status.textContent = "";
}

// Files dropped anywhere on the page are the photos to search by (the browser would otherwise open
// a file dropped beside the box in place of the page); text dragged into the description is not.
const drop = $("drop");
const carriesFiles = (event) => event.dataTransfer && event.dataTransfer.types.includes("Files");
drop.addEventListener("dragover", (event) => { if (carriesFiles(event)) drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
document.addEventListener("dragover", (event) => { if (carriesFiles(event)) event.preventDefault(); });
document.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) {
    photo.files = event.dataTransfer.files;
    showPreview();
    showProblems();
  }
});
photo.addEventListener("change", () => { showPreview(); showProblems(); });
$("text").addEventListener("input", () => showProblems());
$("k").addEventListener("input", () => showProblems());
form.addEventListener("submit", search);
$("text").addEventListener("keydown", (event) => {  // Enter writes a new line in the description; Ctrl+Enter searches
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
});
$("clear").addEventListener("click", clearAll);
loadCategories();
loadLimits();
