// Keep keyboard users where the action is after htmx swaps content in.
// (after an outerHTML swap the event's target is the old, detached element: look in the page)
document.addEventListener("htmx:afterSettle", function () {
  var invalid = document.querySelector("#main [aria-invalid=true]");
  if (invalid) { invalid.focus(); }
});

// A failed request must not fail silently.
document.addEventListener("htmx:responseError", function (event) {
  var status = event.detail.xhr.status;
  var main = document.getElementById("main");
  if (!main) { return; }
  var note = document.createElement("p");
  note.className = "flash flash-error";
  note.setAttribute("role", "alert");
  note.textContent = status === 403 ? "Your role cannot do this."
    : status === 404 ? "That record no longer exists, or is not yours to see."
    : "The server could not do this (" + status + "). Please try again.";
  main.prepend(note);
});

// Ticket list bulk bar: "select all on this page", a count of what is ticked, and the list's
// live refresh held back while something is ticked (it would clear the selection).
(function () {
  "use strict";

  function sync(form) {
    var boxes = form.querySelectorAll("input[name=ticket]");
    var ticked = form.querySelectorAll("input[name=ticket]:checked").length;
    var all = form.querySelector("[data-select-all]");
    if (all) {
      all.checked = boxes.length > 0 && ticked === boxes.length;
      all.indeterminate = ticked > 0 && ticked < boxes.length;
    }
    var count = form.querySelector("[data-bulk-count]");
    if (count) { count.textContent = ticked ? ticked + " selected" : ""; }
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    var form = target.form;
    if (!form || form.id !== "ticket-bulk") { return; }
    if (target.hasAttribute("data-select-all")) {
      form.querySelectorAll("input[name=ticket]").forEach(function (box) { box.checked = target.checked; });
    }
    if (target.hasAttribute("data-select-all") || target.name === "ticket") { sync(form); }
  });

  document.addEventListener("htmx:load", function (event) {
    var root = event.detail.elt;
    if (!root.querySelectorAll) { return; }
    root.querySelectorAll("[data-select-all][hidden]").forEach(function (all) {
      all.hidden = false;  // useful only with this script running
      sync(all.form);
    });
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    var list = document.getElementById("ticket-list");
    if ((elt.id === "ticket-list" || elt.getAttribute("data-live") === "list") && list &&
        event.detail.requestConfig.verb === "get" && list.querySelector("input[name=ticket]:checked")) {
      event.preventDefault();
    }
  });
})();
