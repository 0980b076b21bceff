// Live pages (portal/live.py): one server-sent-events stream per tab, opened for the element
// marked data-live-stream. The stream only names what changed; the parts marked data-live="…"
// then fetch themselves again through htmx (hx-trigger="live-refresh"). A tab hidden for a
// minute lets its stream go, and catches up when shown again; the server ends every stream
// after a few minutes, and the browser's EventSource opens the next one by itself.
(function () {
  "use strict";

  var source = null;
  var url = null;
  var lastUrl = null;
  var catchUp = false;   // refresh everything when the (next) stream opens: something may have been missed
  var hiddenTimer = null;
  var replying = {};     // user id -> {name, until}: colleagues replying now
  var TYPING_MS = 8000;  // as portal.live.TYPING_SECONDS
  var sentAt = 0;
  // This tab, so that its stream does not tell it of its own changes (portal.live.TAB_HEADER).
  var tab = Math.random().toString(36).slice(2) + Date.now().toString(36);

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-Tidemark-Tab"] = tab;
  });

  function editing(el) {
    return el.hasAttribute("data-live-edited") ||
      (el.querySelector("form") !== null && el.contains(document.activeElement));
  }

  var again = {};        // parts told to refresh while their request was under way

  function refresh(part) {
    document.querySelectorAll('[data-live="' + part + '"]').forEach(function (el) {
      if (editing(el)) { return; }  // a colleague's change must not throw away what is being typed here
      // The answer replaces the element: a second request queued on it would be lost with it.
      if (el.classList.contains("htmx-request")) { again[part] = true; return; }
      htmx.trigger(el, "live-refresh");
    });
  }

  document.addEventListener("htmx:afterSettle", function () {
    Object.keys(again).forEach(function (part) { delete again[part]; refresh(part); });
  });

  function refreshAll() { ["conversation", "fields", "list"].forEach(refresh); }

  function showReplying() {
    var el = document.getElementById("ticket-presence");
    if (!el) { return; }
    var now = Date.now();
    var names = [];
    Object.keys(replying).forEach(function (id) {
      if (replying[id].until > now) { names.push(replying[id].name); } else { delete replying[id]; }
    });
    el.textContent = names.length ? names.join(" and ") + (names.length > 1 ? " are replying" : " is replying") : "";
    el.hidden = names.length === 0;
  }

  // A refused stream (too many open: portal.live.Stream.admit) is not retried by EventSource:
  // the page then refreshes its live parts every 30 s, and asks for a stream again after 2 minutes.
  var POLL_MS = 30000, RETRY_MS = 120000;
  var pollTimer = null, retryTimer = null;

  function stopPolling() {
    window.clearInterval(pollTimer);
    window.clearTimeout(retryTimer);
    pollTimer = retryTimer = null;
  }

  function poll() {
    if (pollTimer) { return; }
    document.documentElement.setAttribute("data-live-polling", "");
    pollTimer = window.setInterval(refreshAll, POLL_MS);
    retryTimer = window.setTimeout(function () { close(); connect(); }, RETRY_MS);
  }

  function close() {
    if (source) { source.close(); }
    source = null;
    url = null;
    stopPolling();
    document.documentElement.removeAttribute("data-live-polling");
  }

  function connect() {
    var el = document.querySelector("[data-live-stream]");
    var wanted = el ? el.getAttribute("data-live-stream") : null;
    if (wanted === url && source) { return; }
    close();
    replying = {};
    if (!wanted || document.hidden) { return; }
    if (wanted !== lastUrl) { catchUp = false; }  // another page: drawn just now
    url = lastUrl = wanted;
    source = new EventSource(url + (url.indexOf("?") < 0 ? "?" : "&") + "tab=" + tab);
    source.addEventListener("error", function () {
      // CLOSED: refused (or the server is away), and EventSource gives up; otherwise it reconnects.
      if (source && source.readyState === EventSource.CLOSED) { catchUp = true; poll(); }
    });
    source.addEventListener("open", function () {
      stopPolling();
      document.documentElement.removeAttribute("data-live-polling");
      if (catchUp) { refreshAll(); }
      catchUp = true;  // every later opening is a reconnection
    });
    source.addEventListener("changed", function (event) { refresh(event.data); });
    source.addEventListener("presence", function (event) {
      var who = JSON.parse(event.data);
      if (who.stopped) { delete replying[who.user]; } else { replying[who.user] = {name: who.name, until: Date.now() + TYPING_MS}; }
      showReplying();
    });
  }

  document.addEventListener("htmx:load", connect);
  window.setInterval(showReplying, 1000);

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      hiddenTimer = window.setTimeout(function () { close(); catchUp = true; }, 60000);
    } else {
      window.clearTimeout(hiddenTimer);
      connect();
    }
  });

  // A part of the page being edited is not drawn again under the person's hands.
  document.addEventListener("input", function (event) {
    var part = event.target.closest && event.target.closest('[data-live="fields"]');
    if (part) { part.setAttribute("data-live-edited", ""); }
  });

  // "Ana is replying": told when the composer is opened or typed in, at most every 3 s.
  function tellReplying(stopped) {
    var presence = document.getElementById("ticket-presence");
    if (!presence) { return; }
    var now = Date.now();
    if (!stopped && now - sentAt < 3000) { return; }
    sentAt = stopped ? 0 : now;
    var headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
    var body = new URLSearchParams();
    if (stopped) { body.set("stopped", "1"); }
    fetch(presence.getAttribute("data-typing-url"), {method: "POST", headers: headers, body: body, credentials: "same-origin"})
      .catch(function () { /* only a courtesy to colleagues */ });
  }

  ["focusin", "input", "keydown"].forEach(function (name) {
    document.addEventListener(name, function (event) {
      if (event.target.closest && event.target.closest("#ticket-reply")) { tellReplying(false); }
    });
  });
  document.addEventListener("focusout", function (event) {
    var composer = event.target.closest && event.target.closest("#ticket-reply");
    if (composer && !composer.contains(event.relatedTarget)) { tellReplying(true); }
  });
})();
