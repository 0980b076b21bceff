// Mailbox pages: protocol-dependent fields, the port that follows protocol and security, and
// reordering routes by drag and drop. Listeners sit on the document, so they keep working on
// forms that htmx swaps in.
(function () {
  "use strict";

  function mailboxForm(el) { return el.closest && el.closest("form[data-default-ports]"); }

  function showForProtocol(form) {
    var protocol = form.elements.protocol.value;
    form.querySelectorAll("[data-protocol]").forEach(function (part) {
      part.hidden = part.getAttribute("data-protocol") !== protocol;
    });
    var move = form.querySelector("[data-when-move]");
    if (move) { move.hidden = form.elements.after_action_imap.value !== "move"; }
  }

  // The port follows protocol and security until the admin types one of their own.
  function followPort(form) {
    var ports = JSON.parse(form.getAttribute("data-default-ports"));
    var usual = ports[form.elements.protocol.value + " " + form.elements.security.value];
    var port = form.elements.port;
    port.placeholder = usual;
    if (port.getAttribute("data-auto") === "true") { port.value = usual; }
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    var form = mailboxForm(target);
    if (form && (target.name === "protocol" || target.name === "security")) {
      showForProtocol(form);
      followPort(form);
    } else if (form && target.name === "after_action_imap") {
      showForProtocol(form);
    } else if (target.name === "fallback" && target.closest(".route-form")) {
      target.closest("form").querySelector("[data-conditions]").hidden = target.checked;
    }
  });

  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target.name === "port" && mailboxForm(target)) {
      target.setAttribute("data-auto", target.value.trim() === "" ? "true" : "false");
    }
  });

  // After a move with the keyboard, stay on the button that moved the route.
  document.addEventListener("htmx:afterSettle", function () {
    var focus = document.querySelector("#routes [data-focus]");
    if (focus) { focus.focus(); }
  });

  // Drag and drop within a group (exact, wildcard); the server keeps the groups in order.
  var dragged = null;
  var startOrder = "";

  function order(list) {
    return Array.prototype.map.call(list.querySelectorAll("li.route"), function (li) {
      return li.getAttribute("data-route-id");
    }).join(",");
  }

  document.addEventListener("dragstart", function (event) {
    var li = event.target.closest && event.target.closest("li.route[draggable=true]");
    if (!li) { return; }
    dragged = li;
    startOrder = order(li.parentNode);
    li.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", li.getAttribute("data-route-id"));
  });

  document.addEventListener("dragover", function (event) {
    if (!dragged) { return; }
    var over = event.target.closest && event.target.closest("li.route");
    if (!over || over.parentNode !== dragged.parentNode ||
        over.getAttribute("data-group") !== dragged.getAttribute("data-group")) { return; }
    event.preventDefault();
    if (over === dragged) { return; }
    var box = over.getBoundingClientRect();
    var after = event.clientY > box.top + box.height / 2;
    over.parentNode.insertBefore(dragged, after ? over.nextSibling : over);
  });

  document.addEventListener("drop", function (event) {
    if (dragged) { event.preventDefault(); }
  });

  document.addEventListener("dragend", function () {
    if (!dragged) { return; }
    var li = dragged;
    dragged = null;
    li.classList.remove("dragging");
    if (order(li.parentNode) !== startOrder) {
      htmx.trigger(li.closest("form"), "reorder");
    }
  });
})();
