// The search page: POST /similar with the photo and/or text, then draw the category and the results;
// a result's "More like this" asks GET /listings/{id}/similar for the listings like it. Each search is
// kept in the page's address (remember), for Back, Forward, Reload and bookmarks (restore).
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search-form");
const photo = $("photo");
const status = $("status");
const price = new Intl.NumberFormat("en-GB", { style: "currency", currency: "GBP" });
const percent = (p) => `${(100 * p).toFixed(1)}%`;
// the API's field names, as the page labels its fields (a refusal names the field to mend)
const LABELS = { txt: "Description", img: "Photo", min_price: "Min price", max_price: "Max price", k: "Results" };
const QUOTED = /('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")/;  // a value a refusal echoes: split() keeps it at odd places
// A refusal in the page's words, only outside the quoted values it echoes (a photo named 'img-1.txt'
// keeps its name): the API's field names become the page's labels, a field's name in brackets after
// words that already say what it is ("a description of the listing (txt)") goes, and so does the
// name of a server setting ("(data.max_image_pixels)"), which the user cannot change.
const inPageWords = (detail) => String(detail)
  .split(QUOTED)
  .map((part, i) => (i % 2 ? part : part
    .replace(/\ba text \(txt\)/g, "a description")
    .replace(/ \((?:txt|img|(?:the setting )?[a-z_]+\.[a-z_]+)\)/g, "")
    .replace(/\b(txt|img|min_price|max_price|k)\b/g, (name) => LABELS[name])))
  .join("");
const counted = (n) => (n === 0 ? "No listings" : n === 1 ? "1 listing" : `${n} listings`);
const ANSWER_WITHIN_S = 60;  // a search the server has not answered by then is given up

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
const pixels = new WeakMap();  // a chosen photo's width × height, once its thumbnail has loaded (showPreview)

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
  // the server counts the pixels a photo decodes to, and decodes a large JPEG at down to 1/8 of its
  // sides: a JPEG is named here only when over the limit even so (the server names a progressive one)
  const huge = files.find((file) => pixels.get(file) > limits.max_photo_pixels * (file.type === "image/jpeg" ? 64 : 1));
  if (huge) return `Photo: ${huge.name} has ${pixels.get(huge).toLocaleString("en-GB")} pixels, at most ${limits.max_photo_pixels.toLocaleString("en-GB")}.`;
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

const refused = new Set();  // the fields the server's last refusal named: marked until edited or searched again

// The fields a refusal is about, as the form's elements (each named as the API names its field):
// those a problem names before its first ":" (advice may follow, such as "send a photo (img)"),
// outside the values it quotes, and the photo field for a problem with a photo; several problems
// are joined by "; ".
function refusedFields(detail) {
  const unquoted = String(detail).split(QUOTED).filter((part, i) => i % 2 === 0).join("''");
  const names = unquoted.split("; ").flatMap((problem) => [
    ...(problem.split(":")[0].match(/\b(?:txt|img|k|category|min_price|max_price)\b/g) ?? []),
    ...(/^photo \d/.test(problem) ? ["img"] : []),
  ]);
  return names.map((name) => form.elements[name]);
}

function markRefused(detail) {
  for (const field of refusedFields(detail)) {
    field.setAttribute("aria-invalid", "true");
    refused.add(field);
  }
}

// The server's marks go from the fields given (all by default); a field still marked is unchanged
// since it was sent, so the page's own check found nothing wrong with it.
function unmarkRefused(fields = [...refused]) {
  for (const field of fields) {
    if (refused.delete(field)) field.setAttribute("aria-invalid", "false");
  }
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
    thumbnail.addEventListener("load", () => {  // its size known: over the server's pixel limit, it is named
      pixels.set(file, thumbnail.naturalWidth * thumbnail.naturalHeight);
      showProblems();
    });
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

// `filtered`: whether the search had a filter (a category or a price), which an empty answer blames
function drawResults(results, filtered) {
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
    const [title, location, category] = [
      element("h3", "title", listing.title || "(untitled)"),
      element("p", "location muted", listing.location),
      element("p", "category muted", listing.category),
    ];
    for (const words of [title, location, category]) words.dir = "auto";  // Arabic or Hebrew reads right to left
    const score = element("p", "score muted", `score ${listing.score.toFixed(2)}`);
    score.setAttribute("aria-describedby", "score-note");  // what a score is, said once above the results
    body.append(title, element("p", "price", listing.price === null ? "price not given" : price.format(listing.price)), location, category, score);
    const more = element("button", "more-like secondary", "More like this");
    more.type = "button";
    more.setAttribute("aria-label", `More like “${listing.title || "(untitled)"}”`);
    more.addEventListener("click", () => moreLike(listing));
    body.append(more);
    card.append(body);
    grid.append(card);
  }
  $("no-results").hidden = results.length > 0;
  $("no-results").textContent = filtered ? "No listing matches these filters." : "No listing matches.";
  $("score-note").hidden = !results.length;
  $("results-section").hidden = false;
}

// The form's description, when one is typed, and its filters, as the API names them.
function formFields() {
  const text = $("text").value.trim();
  return [...(text ? [["txt", text]] : []), ...filters()];
}

function filters() {
  const fields = [["k", $("k").value.trim() || "12"]];
  for (const [id, field] of [["category", "category"], ["min-price", "min_price"], ["max-price", "max_price"]]) {
    if ($(id).value) fields.push([field, $(id).value]);
  }
  return fields;
}

// The search as the page's address (the API's fields; "like" for "More like this"), a new history
// entry: Back, Forward, Reload and a bookmark bring it back (restore). An empty one leaves the page's bare address.
function remember(fields) {
  const query = new URLSearchParams(fields).toString();
  if (query !== location.search.slice(1)) history.pushState(null, "", query ? `?${query}` : location.pathname);
}

// The search the address names, back in the form and run again, with no new history entry; an
// address with no search empties the page. A photo cannot be kept there: the page says so.
async function restore() {
  const state = new URLSearchParams(location.search);
  form.reset();
  showPreview();
  unmarkRefused();
  for (const name of ["txt", "category", "min_price", "max_price", "k"]) {
    const field = form.elements[name];  // each named as the API names its field
    if (!state.has(name)) continue;
    // a category the catalogue no longer has stays asked for: the server names it
    if (name === "category" && ![...field.options].some((option) => option.value === state.get(name))) {
      field.append(new Option(state.get(name), state.get(name)));
    }
    field.value = state.get(name);
  }
  const photos = Number(state.get("photos"));
  const notKept = !photos ? "" : photos > 1
    ? `The ${photos} photos of this search are not kept in the page's address: choose them again.`
    : "The photo of this search is not kept in the page's address: choose it again.";
  if (state.has("like")) {
    await moreLike({ product_id: state.get("like") }, true);
  } else if (form.elements.txt.value.trim()) {
    if (await search(true) !== "superseded" && notKept) status.textContent = `${notKept} ${status.textContent}`;
  } else {
    running?.abort();
    clearAnswer();
    showProblems();
    status.textContent = notKept;
  }
}

// While a search is on its way the results drawn answer an earlier one: marked busy (dimmed, their
// buttons disabled) until it ends, so they are not taken for its answer.
function markBusy(busy) {
  $("results-section").setAttribute("aria-busy", String(busy));
  for (const button of $("results").querySelectorAll("button")) button.disabled = busy;
}

// A JSON answer's `detail`: a sentence, a list of {msg} (FastAPI's own form), or one {msg}; "" when
// the answer is not JSON (a proxy's HTML page, a plain-text 413).
function detailOf(body) {
  let detail;
  try {
    ({ detail } = JSON.parse(body));
  } catch (error) {
    return "";
  }
  const said = (item) => (item && typeof item === "object" ? String(item.msg ?? "") : String(item ?? ""));
  return Array.isArray(detail) ? detail.map(said).filter(Boolean).join("; ") : said(detail);
}

// What the status says of an answer that is not a result: the server's words, a 5xx its failure and
// any other a refusal, which marks the fields it names; with no words, the HTTP status; `gone`, when
// given, says a 404.
function refusal(response, body, gone) {
  if (response.status === 404 && gone) return gone;
  const detail = detailOf(body);
  if (!detail) return `The server answered ${`${response.status} ${response.statusText}`.trim()}.`;
  if (response.status >= 500) return `The server failed: ${inPageWords(detail)}`;
  markRefused(detail);
  return `Refused: ${inPageWords(detail)}`;
}

let running = null;  // the AbortController of the search on its way: a later search, or Clear, aborts it

// Fetch one search and draw it: "answered"; "refused" when refused or failed (said in the status);
// "superseded" when a later search was asked for meanwhile (its answer is the one the user wants).
// Search stays enabled meanwhile: clicked again, it aborts this search for the new one. `draw`
// draws what only this kind of search answers and says what ranked the results; `keep`: a refusal
// leaves the results drawn; `gone`: what a 404 means.
async function ask(url, options, { draw, keep = false, gone = "" }) {
  running?.abort();
  const controller = running = new AbortController();
  const filtered = filters().length > 1;  // Results is always sent: the others filter
  const timer = setTimeout(() => controller.abort(new DOMException("no answer", "TimeoutError")), 1000 * ANSWER_WITHIN_S);
  markBusy(true);
  status.textContent = "Searching…";
  try {
    const response = await fetch(url, { ...options, signal: controller.signal });
    const body = await response.text();
    if (controller.signal.aborted) return "superseded";
    if (!response.ok) {
      if (!keep) clearAnswer();  // the results of an earlier search are not the answer to this one
      status.textContent = refusal(response, body, gone);
      return "refused";
    }
    const answer = JSON.parse(body);
    const ranking = draw(answer);
    drawResults(answer.results, filtered);
    status.textContent = `${counted(answer.results.length)}, ranked by ${ranking}`;
    return "answered";
  } catch (error) {
    const timedOut = controller.signal.reason?.name === "TimeoutError";
    if (controller.signal.aborted && !timedOut) return "superseded";  // an abort is no failure to tell
    if (!keep) clearAnswer();
    status.textContent = timedOut
      ? `The server did not answer in ${ANSWER_WITHIN_S} seconds: try again later.`
      : error instanceof TypeError
        ? "The server is not answering: is fbm serve running?"
        : `The search failed: ${error}`;
    return "refused";
  } finally {
    clearTimeout(timer);
    if (running === controller) markBusy(false);  // a later search keeps the results busy
  }
}

// On a narrow screen the status line may be below the fold once a search answers: scroll it into
// view, leaving the keyboard focus where the user is typing.
function revealStatus() {
  const { top, bottom } = status.getBoundingClientRect();
  if (top < 0 || bottom > window.innerHeight) status.scrollIntoView({ behavior: "smooth", block: "center" });
}

// "More like this" on a listing drawn, or `restoring` one from the page's address (restore).
async function moreLike(listing, restoring = false) {
  const url = `/listings/${encodeURIComponent(listing.product_id)}/similar?${new URLSearchParams(filters())}`;
  unmarkRefused();
  const problem = showProblems(["k"]);  // of the fields checked here, only Results is sent with it
  if (problem) running?.abort();  // refused here, it is still the search the user wants now
  else if (!restoring) remember([["like", listing.product_id], ...formFields()]);
  const outcome = problem ? "refused" : await ask(url, {}, {
    keep: true,  // the results the user was looking at stay: the refusal is said above them
    gone: "That listing is no longer in the catalogue.",
    draw: (answer) => {
      $("prediction").hidden = true;
      const title = element("bdi", "", answer.listing.title || "(untitled)");  // in its own direction
      $("results-heading").replaceChildren("Listings like “", title, "”");
      // the listing's inputs, not the form's, which may hold others
      const photos = answer.listing.image_ids.length > 1 ? "photos" : "photo";
      return `that listing's ${answer.modalities.map((used) => (used === "image" ? photos : used)).join(" and ")}`;
    },
  });
  if (outcome === "superseded" || restoring) return;  // the focus stays with the search the user turned to
  // the button may be far below the form, and is disabled or gone with the old results: bring the new
  // results, or the refusal, into view, and keyboard focus with them
  const target = outcome === "answered" ? $("results-heading") : status;
  target.scrollIntoView({ behavior: "smooth", block: outcome === "answered" ? "start" : "center" });
  target.focus();
}

// The form's search, or the one `restoring` from the page's address (restore); its outcome as ask's.
async function search(restoring = false) {
  running?.abort();  // this search, sent or refused here, is the one the user wants now
  unmarkRefused();
  const text = $("text").value.trim();
  if (!photo.files.length && !text) {
    status.textContent = "Add a photo or a description first.";
    revealStatus();
    return "refused";
  }
  if (showProblems()) {
    revealStatus();
    return "refused";
  }
  const data = new FormData();
  for (const file of photo.files) data.append("img", file);
  const fields = formFields();
  for (const [field, value] of fields) data.append(field, value);
  // photos cannot go in an address: how many there were, for restore to say so
  if (!restoring) remember(photo.files.length ? [...fields, ["photos", photo.files.length]] : fields);
  const outcome = await ask("/similar", { method: "POST", body: data }, {
    draw: (answer) => {
      drawPrediction(answer.prediction, Boolean(text));
      $("results-heading").textContent = "Similar listings";
      return answer.modalities.join(" + ");
    },
  });
  if (outcome !== "superseded") revealStatus();
  return outcome;
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
  unmarkRefused();
  clearAnswer();
  status.textContent = "";
  remember([]);
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
// an edited field loses the server's mark, first: its own check, above, then marks it if need be
// (a list chosen from may say "change" alone)
for (const type of ["input", "change"]) form.addEventListener(type, (event) => unmarkRefused([event.target]), { capture: true });
form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
$("text").addEventListener("keydown", (event) => {  // Enter writes a new line in the description; Ctrl+Enter searches
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
});
$("clear").addEventListener("click", clearAll);
window.addEventListener("popstate", restore);
// a search in the address (a bookmark, Reload) is run once the categories and limits it is checked against are here
Promise.all([loadCategories(), loadLimits()]).then(() => {
  if (location.search) restore();
});
