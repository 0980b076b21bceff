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
