// twotower page: plain JS, no build step, no network access beyond this service.
"use strict";

const $ = (id) => document.getElementById(id);

// JSON with integers beyond 2^53 (64-bit ids) kept exact: as strings. JSON.parse would
// round them to the nearest double, another id. Strings are matched whole, so digits
// inside them are left alone; a number is a value after ":", "[" or "," and before ",",
// "]" or "}", so scores (with a point or an exponent) never match. (No lookbehind:
// older Safari cannot parse it.)
const BIG_INT = /"(?:[^"\\]|\\.)*"|([:[,]\s*)(-?\d{16,})(?=\s*[,\]}])/g;
function parseJson(text) {
  return JSON.parse(text.replace(BIG_INT, (m, before, digits) => {
    if (before === undefined) return m;  // a string
    return before + (Number.isSafeInteger(Number(digits)) ? digits : `"${digits}"`);
  }));
}

// ``send``: a body sent as JSON in a POST (else a GET)
async function api(path, signal, send) {
  const init = { headers: { accept: "application/json" }, signal };
  if (send !== undefined) {
    init.method = "POST";
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(send);  // ids beyond 2^53 go as the strings read
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {  // no answer at all (the browser's bare "Failed to fetch")
    if (err.name === "AbortError") throw err;
    throw new Error("the service did not answer: it may be stopped or restarting, or the " +
                    `network is down (${err.message}); try again once it is back`);
  }
  let body = null;
  try { body = parseJson(await res.text()); } catch (_) { /* not JSON */ }
  if (body && typeof body.model === "string") modelSeen(body.model);
  if (!res.ok) {
    const err = new Error(body && body.detail ? body.detail : `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

// Each panel shows the answer to its latest request only: starting a request aborts the
// panel's earlier one, and an answer that arrives after a newer request began is dropped
// (a slow answer for an earlier user must not replace the user asked for last).
const pending = {};
function begin(panel) {
  if (pending[panel]) pending[panel].abort();
  const ctl = new AbortController();
  pending[panel] = ctl;
  return ctl;
}
const stale = (panel, ctl) => pending[panel] !== ctl;

// One error box for the page; ``panel`` names whose error it shows, so a panel's later
// success clears its own error only (showError(null) clears any).
function showError(err, panel) {
  const box = $("error");
  if (!err) {
    if (panel === undefined || box.dataset.panel === panel) {
      box.hidden = true; box.textContent = ""; box.dataset.panel = "";
    }
    return;
  }
  box.textContent = String(err.message || err);
  box.dataset.panel = panel || "";
  box.hidden = false;
}

// the recommendations' heading; a fallback's (e.g. a mistyped id: the popular items) stands
// out from the muted text, not only in its words
function recsFor(text, fallback = false) {
  $("recs-for").textContent = text;
  $("recs-for").classList.toggle("fallback", fallback);
}

// A new user built by clicking items: their items (``{item_id, title}``, oldest first) while
// the page shows them, else null (a user id's lists, or nothing yet). ``canBuild``: the
// run's query tower reads a history (/v1/model's supports_history), so the mode is offered.
let built = null;
let canBuild = false;
const key = (id) => String(id);  // ids as read: numbers, or strings (beyond 2^53, or text)
const isBuilt = (id) => built !== null && built.some((it) => key(it.item_id) === key(id));

// the add/remove button of an item in a list: "+" adds it to the new user's items, "−"
// takes it out (it is there)
function markToggle(button) {
  const inIt = isBuilt(button.dataset.itemId);
  const title = button.dataset.title;
  button.textContent = inIt ? "\u2212" : "+";
  button.setAttribute("aria-label", inIt ? `remove "${title}" from the new user's items`
    : `add "${title}" to a new user's items`);
  button.title = button.getAttribute("aria-label");
}
const markToggles = () => document.querySelectorAll("button.toggle").forEach(markToggle);

// withScore: "score" (a model's, 3 decimals) or "count" (the popular fallback's scores
// are interaction counts: whole numbers, said so), else none; ``toggle``: each item gets
// its add/remove button (when the run offers the new-user mode)
function fillList(list, items, withScore, toggle) {
  list.replaceChildren();
  for (const it of items) {
    const li = document.createElement("li");
    li.dataset.itemId = String(it.item_id);
    // the name is a button, so Tab reaches it and Enter or Space opens its similar items
    // (its click reaches the row's listener below, as a click anywhere on the row does)
    const title = document.createElement("button");
    title.type = "button";
    title.className = "title";
    title.textContent = it.title;
    li.append(title);
    if (withScore && typeof it.score === "number") {
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = withScore === "count"
        ? `${Math.round(it.score).toLocaleString("en")} interactions` : it.score.toFixed(3);
      li.append(score);
    }
    if (toggle) {  // offered or not as the model served says, now and after a reload
      toggleOf.set(li, it);
      if (canBuild) li.append(toggleButton(it));
    }
    li.addEventListener("click", () => showSimilar(it.item_id, it.title));
    list.append(li);
  }
}

// the rows of the lists that offer add/remove buttons, and each one's item: a reload to a
// run that reads no history takes the buttons away at once, one to a run that does brings
// them (they stayed as they were until a list was drawn again)
const toggleOf = new WeakMap();
function toggleButton(it) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "toggle secondary";
  button.dataset.itemId = key(it.item_id);
  button.dataset.title = it.title;
  markToggle(button);
  button.addEventListener("click", (ev) => {
    ev.stopPropagation();  // not the item's similar items too
    toggleBuilt(it.item_id, it.title);
  });
  return button;
}
function syncToggles() {
  for (const li of document.querySelectorAll("li[data-item-id]")) {
    const it = toggleOf.get(li);
    const button = li.querySelector("button.toggle");
    if (!it || Boolean(button) === canBuild) continue;
    if (canBuild) li.append(toggleButton(it)); else button.remove();
  }
}

// The new user's items in the address, so a reload or a shared link shows them again:
// ?history=ID,ID,... oldest first, each id URL-encoded (an id holding "," stays one id).
const historyQuery = (items) =>
  `?history=${items.map((it) => encodeURIComponent(key(it.item_id))).join(",")}`;

// The list's length and "leave out items they had" join the address when they are not the
// page's defaults (&k=20, &exclude_seen=false), so a reload or a shared link shows the
// same list.
function viewQuery() {
  const select = $("k");
  const dflt = [...select.options].find((o) => o.defaultSelected);
  return (dflt && select.value === dflt.value ? "" : `&k=${encodeURIComponent(select.value)}`) +
    ($("exclude-seen").checked ? "" : "&exclude_seen=false");
}

// ... and back from the address: a k the page does not offer (e.g. past this catalogue)
// keeps the length shown
function viewFromAddress(params) {
  const k = params.get("k");
  if (k !== null && [...$("k").options].some((o) => o.value === k)) $("k").value = k;
  if (params.get("exclude_seen") === "false") $("exclude-seen").checked = false;
}

// the ids of the address's ?history= (its first), null without one; empty parts are
// skipped, "+" reads as a space (as in ?user=); text that is not URL-encoded: an error
// naming the parameter and the form expected
function historyFromAddress(search) {
  const part = search.replace(/^\?/, "").split("&")
    .find((p) => p === "history" || p.startsWith("history="));
  if (part === undefined) return null;
  const ids = [];
  for (const raw of part.slice("history=".length).split(",")) {
    if (!raw) continue;
    try {
      ids.push(decodeURIComponent(raw.replace(/\+/g, " ")));
    } catch (_) {
      throw new Error(`the address's history: "${raw}" (item ${ids.length + 1}) is not ` +
        "URL-encoded text; expected item ids, each URL-encoded, separated by commas, " +
        "oldest first (e.g. ?history=50,172,181)");
    }
  }
  return ids;
}

// a new user from the address: titles from /v1/item (an id it does not answer keeps the id
// as its title: by-history's error then names it, and − takes it out), then asked as when
// built by clicks
async function restoreBuilt(ids) {
  const ctl = begin("user");  // a user id asked meanwhile wins
  const refs = await Promise.all(ids.map((id) =>
    api(`/v1/item?${new URLSearchParams({ item_id: id })}`, ctl.signal)
      .then((m) => ({ item_id: m.item_id, title: m.title }), () => ({ item_id: id, title: id }))));
  if (stale("user", ctl)) return;
  built = refs.filter((it, j) => refs.findIndex((o) => key(o.item_id) === key(it.item_id)) === j);
  $("user-id").value = "";
  showBuilt();
}

function toggleBuilt(itemId, title) {
  if (built === null) {  // the new-user mode starts: the user id's lists go
    built = [];
    $("user-id").value = "";
  }
  built = isBuilt(itemId) ? built.filter((it) => key(it.item_id) !== key(itemId))
    : [...built, { item_id: itemId, title }];
  showBuilt();
}

// the new user's items under "Their items", and their recommendations from
// POST /v1/recommendations/by-history (k and "leave out items they had" as for a user id)
async function showBuilt() {
  const ctl = begin("user");  // a user id asked since, or a later change, wins
  showError(null);
  const n = built.length;
  fillList($("history"), built, false, true);
  $("history-count").textContent = n ? `(a new user: ${n}, oldest first)`
    : "(a new user: none yet; + on an item adds it)";
  $("clear-built").hidden = false;
  markToggles();
  history.replaceState(null, "", n ? historyQuery(built) + viewQuery() : location.pathname);
  const heading = `for the new user's ${n} item${n === 1 ? "" : "s"}`;
  if (!n) {
    $("recs").replaceChildren();
    recsFor(heading);
    return;
  }
  const body = { item_ids: built.map((it) => it.item_id), k: Number($("k").value),
                 exclude_history: $("exclude-seen").checked };
  try {
    const res = await api("/v1/recommendations/by-history", ctl.signal, body);
    if (stale("user", ctl)) return;
    fillList($("recs"), res.items, "score", true);
    recsFor(heading);
  } catch (err) {
    if (stale("user", ctl)) return;
    $("recs").replaceChildren();
    recsFor(heading);
    const titles = built.map((it) => `"${it.title}"`).join(", ");
    showError(`no recommendations for the new user's items (${titles}): ${err.message}`);
  }
}

function leaveBuilt() {
  if (built === null) return;
  built = null;
  history.replaceState(null, "", location.pathname);  // a user id's comes when it is shown
  $("clear-built").hidden = true;
  markToggles();
}

async function showUser(userId) {
  const ctl = begin("user");
  showError(null);
  leaveBuilt();
  const k = $("k").value;
  const exclude = $("exclude-seen").checked;
  const q = new URLSearchParams({ user_id: userId, k, exclude_seen: exclude });
  // ids as query parameters: any id, "." and ".." too (a path resolves them as dot segments)
  const histQ = new URLSearchParams({ user_id: userId, limit: 1000 });
  const [recsR, histR] = await Promise.allSettled([
    api(`/v1/recommendations?${q}`, ctl.signal), api(`/v1/history?${histQ}`, ctl.signal)]);
  try {
    let recs;
    if (recsR.status === "fulfilled") {
      recs = recsR.value;
    } else if (recsR.reason.status === 404 &&
               (histR.status === "fulfilled" || histR.reason.status === 404)) {
      // a user the run knows but never trained on, or one it does not know (a new user):
      // the most popular items, said so
      q.set("fallback", "popular");
      recs = await api(`/v1/recommendations?${q}`, ctl.signal);
    } else {
      throw recsR.reason;
    }
    if (stale("user", ctl)) return;
    fillList($("recs"), recs.items, recs.fallback ? "count" : "score", true);
    const known = histR.status === "fulfilled";
    recsFor(`for user ${recs.user_id}` + (!recs.fallback ? "" : known
      ? ` (no training interactions: the ${recs.fallback} items)`
      : ` (not a user of this run: the ${recs.fallback} items)`), Boolean(recs.fallback));
    if (known) {
      fillList($("history"), histR.value.items, false);
      $("history-count").textContent = `(${histR.value.count})`;
    } else if (recs.fallback) {  // not a user of this run: no history to show
      $("history").replaceChildren();
      $("history-count").textContent = "(none: not a user of this run)";
    } else {  // the recommendations stand on their own
      $("history").replaceChildren();
      $("history-count").textContent = `(not available: ${histR.reason.message})`;
    }
    history.replaceState(null, "", `?user=${encodeURIComponent(userId)}${viewQuery()}`);
  } catch (err) {
    if (stale("user", ctl)) return;
    $("recs").replaceChildren();
    $("history").replaceChildren();
    recsFor("");
    $("history-count").textContent = "";
    showError(err);
  }
}

async function showSimilar(itemId, title) {
  const ctl = begin("similar");
  showError(null);
  try {
    const [sim, metaR] = await Promise.all([
      // k: the server's default
      api(`/v1/similar-items?${new URLSearchParams({ item_id: itemId })}`, ctl.signal),
      // metadata is extra: shown when the item has any
      api(`/v1/item?${new URLSearchParams({ item_id: itemId })}`, ctl.signal)
        .then((v) => v, () => null),
    ]);
    if (stale("similar", ctl)) return;
    $("similar-to").textContent = `to ${sim.title}`;
    const bits = [];
    const meta = metaR || {};
    if (meta.year) bits.push(meta.year);
    if (Array.isArray(meta.genres) && meta.genres.length) bits.push(meta.genres.join(", "));
    // the catalogue's other columns (brand, price, tags, ...), as the run holds them
    const shown = ["model", "item_id", "title", "year", "genres", "popularity"];
    for (const [key, value] of Object.entries(meta)) {
      if (shown.includes(key) || value === null || value === "") continue;
      if (Array.isArray(value)) {
        if (value.length) bits.push(`${key}: ${value.join(", ")}`);
      } else if (typeof value !== "object") {
        bits.push(`${key}: ${value}`);
      }
    }
    if (meta.popularity !== undefined) bits.push(`${meta.popularity} interactions`);
    $("item-meta").textContent = bits.join(" · ");
    fillList($("similar"), sim.items, "score", true);
  } catch (err) {
    if (stale("similar", ctl)) return;
    // the panel no longer shows the previous item's list as if it were this one's
    $("similar-to").textContent = "";
    $("item-meta").textContent = "";
    $("similar").replaceChildren();
    showError(err, "similar");
  }
}

let searchTimer = null;
function searchItems() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    const ctl = begin("search");
    const q = $("item-search").value.trim();
    if (!q) { $("search-results").replaceChildren(); showError(null, "search"); return; }
    try {
      const res = await api(`/v1/items?${new URLSearchParams({ search: q, limit: 10 })}`,
                            ctl.signal);
      if (stale("search", ctl)) return;
      showError(null, "search");
      fillList($("search-results"), res.items, false, true);
      if (!res.items.length) {  // said, not an empty list
        const li = document.createElement("li");
        li.className = "none muted";
        li.textContent = `no item's title or id matches "${q}"`;
        $("search-results").append(li);
      }
    } catch (err) {
      if (stale("search", ctl)) return;
      $("search-results").replaceChildren();
      showError(err, "search");
    }
  }, 150);
}

// the id box suggests ids that start with what is typed (any of the run's users)
let userTimer = null;
function suggestUsers() {
  clearTimeout(userTimer);
  userTimer = setTimeout(async () => {
    const ctl = begin("suggest");
    try {
      const q = new URLSearchParams({ search: $("user-id").value.trim(), limit: 20 });
      const res = await api(`/v1/users?${q}`, ctl.signal);
      if (stale("suggest", ctl)) return;
      $("user-ids").replaceChildren(...res.user_ids.map((id) => new Option("", String(id))));
    } catch (_) { /* suggestions only */ }
  }, 150);
}

// The model facts in the header (and what follows from them: the list lengths offered,
// the users drawn from, the new-user mode) are /v1/model's. Every answer names the model
// that gave it (``model``, /v1/model's ``label``): one from another model (a reload,
// POST /admin/reload or SIGHUP, since) reads them again.
let shownModel = null;
let nUsers = 0;
let noHistory = null;  // why this run makes no new user from items (once /v1/model says)
let kChoices = null;  // the page's list lengths, before any catalogue or max_k cut them
let refreshing = false;
let seenMeanwhile = null;  // the last model an answer named while /v1/model was asked
function modelSeen(label) {
  if (shownModel === null) return;
  if (refreshing) {  // /v1/model may answer for the model before this one: asked again
    seenMeanwhile = label;
    return;
  }
  if (label === shownModel) return;
  refreshing = true;
  seenMeanwhile = null;
  api("/v1/model").then(showModel, showError).finally(() => {
    refreshing = false;
    if (seenMeanwhile !== null) modelSeen(seenMeanwhile);  // (nothing when caught up)
  });
}

// an ISO 8601 time as "2026-12-07 17:25 UTC" (the service's are UTC); other text as it is
function when(iso) {
  if (!iso) return "?";
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? iso : `${t.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

function showModel(m) {
  shownModel = m.label;
  $("model-info").textContent =
    `${m.label} · ${m.n_items} items · ${m.n_users} users · trained ${when(m.trained_at)}`;
  $("model-info").title = m.trained_at ? `trained at ${m.trained_at}` : "";
  // list lengths the catalogue cannot fill, or the service refuses, are not offered
  const most = Math.min(m.n_items, m.max_k || m.n_items);
  const select = $("k");
  if (kChoices === null) kChoices = [...select.options].map((o) => [o.value, o.selected]);
  const was = select.options.length ? select.value : null;
  select.replaceChildren(...kChoices.filter(([v]) => Number(v) <= most)
    .map(([v, sel]) => new Option(v, v, sel, was === null ? sel : v === was)));
  if (!select.options.length) select.add(new Option(String(most)));
  nUsers = m.n_users;
  canBuild = m.supports_history === true;
  noHistory = canBuild ? null : `this run's query tower ('${(m.config || {}).query_tower}') ` +
    "reads no history";
  $("build-note").textContent = canBuild
    ? "+ on an item adds it to a new user's items: their recommendations follow."
    : `No new user from clicked items: ${noHistory}.`;
  $("build-note").hidden = false;
  syncToggles();
  if (!canBuild && built !== null) dropBuilt();
  showExampleUser(m.label);
}

// a reload to a run that reads no history while a new user is shown: their lists go (the
// run cannot answer for them), said as for such a link; the address keeps their items
function dropBuilt() {
  const n = built.length;
  built = null;
  if (pending.user) pending.user.abort();  // a by-history answer on its way is dropped
  pending.user = null;
  $("clear-built").hidden = true;
  for (const id of ["recs", "history"]) $(id).replaceChildren();
  recsFor("");
  $("history-count").textContent = "";
  if (n) {
    showError(`the new user's items (${n} item${n === 1 ? "" : "s"}): ${noHistory}, so ` +
              "it makes no new user from items");
  }
}

// The user box's example is this run's first user id, read again with every model (it
// kept the old run's after a reload); an answer for a model since replaced is dropped.
async function showExampleUser(label) {
  try {
    const first = await api("/v1/users?offset=0&limit=1");
    if (label !== shownModel) return;
    $("user-id").placeholder = first.user_ids.length ? `e.g. ${first.user_ids[0]}`
                                                     : "a user id";
  } catch (_) { /* an example only */ }
}

async function init() {
  $("user-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("user-id").value.trim();
    if (id) showUser(id);
  });
  $("item-form").addEventListener("submit", (ev) => {  // Enter: the first match's similar
    ev.preventDefault();
    const first = $("search-results").querySelector("li[data-item-id] button.title");
    if (first) first.click();
  });
  $("item-search").addEventListener("input", searchItems);
  $("user-id").addEventListener("input", suggestUsers);
  $("clear-built").addEventListener("click", () => { built = []; showBuilt(); });
  // the new user's list follows its length and "leave out items they had" at once (a user
  // id's waits for "Recommend", as before)
  for (const id of ["k", "exclude-seen"]) {
    $(id).addEventListener("change", () => { if (built !== null) showBuilt(); });
  }
  $("random-user").addEventListener("click", async () => {
    if (!nUsers) return;
    const ctl = begin("user");  // a later click, or a submitted id, wins over this one
    try {  // any of the run's users, not only the first page of them
      const offset = Math.floor(Math.random() * nUsers);
      let page = await api(`/v1/users?offset=${offset}&limit=1`, ctl.signal);
      if (stale("user", ctl)) return;
      if (!page.user_ids.length && page.total) {  // a reload since: a run with fewer users
        nUsers = page.total;
        page = await api(`/v1/users?offset=${Math.floor(Math.random() * nUsers)}&limit=1`,
                         ctl.signal);
        if (stale("user", ctl)) return;
      }
      if (!page.user_ids.length) return;
      const id = String(page.user_ids[0]);
      $("user-id").value = id;
      showUser(id);
    } catch (err) { if (!stale("user", ctl)) showError(err); }
  });
  try {
    showModel(await api("/v1/model"));
    suggestUsers();
  } catch (err) { showError(err); }
  // the address: a user id (?user=), else a new user's items (?history=)
  const params = new URLSearchParams(location.search);
  viewFromAddress(params);
  const fromUrl = params.get("user");
  if (fromUrl) { $("user-id").value = fromUrl; showUser(fromUrl); return; }
  let ids = null;
  try { ids = historyFromAddress(location.search); } catch (err) { showError(err); }
  if (ids && ids.length && noHistory) {  // a link from another run: said, not shown
    showError(`the address's history (${ids.length} item${ids.length === 1 ? "" : "s"}): ` +
              `${noHistory}, so it makes no new user from items`);
  } else if (ids && ids.length) {
    restoreBuilt(ids);
  }
}

init();
