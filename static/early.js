// Loaded without "defer", before the page's body: a form that htmx sends (hx-post and the like)
// answers with a fragment for its place in the page. Submitted before htmx has taken the page
// (a quick click while the page still loads), it would be a plain POST, and the browser would
// show that bare fragment as a page. Such a submit waits here until htmx is ready, then the
// same button is pressed again, now through htmx. Should htmx never start (its file failed to
// load), the waiting submit goes out as a plain form after all.
(function () {
  "use strict";

  var HX = ["hx-post", "hx-get", "hx-put", "hx-patch", "hx-delete"];
  var ready = false;
  var waiting = [];
  var replaying = false;

  function sentByHtmx(el) {
    return !!el && HX.some(function (name) { return el.hasAttribute(name); });
  }

  function press(form, submitter) {
    if (submitter && submitter.isConnected) { submitter.click(); }
    else if (form.isConnected) { form.requestSubmit(); }
  }

  function replay() {
    var held = waiting;
    waiting = [];
    held.forEach(function (w) { press(w.form, w.submitter); });
  }

  document.addEventListener("submit", function (event) {
    if (ready || replaying) { return; }
    var form = event.target;
    var submitter = event.submitter || null;
    if (!(sentByHtmx(form) || sentByHtmx(submitter))) { return; }
    event.preventDefault();
    event.stopImmediatePropagation();
    if (!waiting.some(function (w) { return w.form === form; })) {
      waiting.push({ form: form, submitter: submitter });
    }
  }, true);

  // htmx announces the page it has processed with an htmx:load on <body>.
  document.addEventListener("htmx:load", function (event) {
    if (ready || event.target !== document.body) { return; }
    ready = true;
    replay();
  });

  window.addEventListener("load", function () {
    setTimeout(function () {
      if (ready) { return; }
      ready = true;
      replaying = true;
      replay();
      replaying = false;
    }, 3000);
  });
})();
