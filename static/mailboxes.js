// Mailbox pages: protocol-dependent fields, the port that follows protocol and security, the
// provider presets, the sign-in fields that follow auth and provider, and reordering routes by
// drag and drop. Listeners sit on the document, so they keep working on
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

  // Parts marked data-show-when="field=value1 value2" show while that field holds one of the values.
  function showWhen(form) {
    form.querySelectorAll("[data-show-when]").forEach(function (part) {
      var rule = part.getAttribute("data-show-when").split("=");
      var field = form.elements[rule[0]];
      if (field) { part.hidden = rule[1].split(" ").indexOf(field.value) < 0; }
    });
  }

  // Presets: fill the fields a big provider's servers want; the user name follows the address
  // (or, on the outgoing server, the mailbox's user name) until the admin types one.
  function applyPreset(button) {
    var form = button.form;
    var values = JSON.parse(button.getAttribute("data-preset"));
    Object.keys(values).forEach(function (name) {
      var field = form.elements[name];
      if (field) { field.value = values[name]; }
    });
    if (form.elements.port && values.port) { form.elements.port.setAttribute("data-auto", "true"); }
    var tenant = form.elements.oauth_tenant;
    if (tenant && values.oauth_provider === "microsoft" && !tenant.value.trim()) { tenant.value = "organizations"; }
    var user = form.elements.username;
    var from = form.elements.address ? form.elements.address.value.trim()
      : button.closest("[data-presets]").getAttribute("data-preset-username") || "";
    if (user && (!user.value.trim() || user.hasAttribute("data-follows"))) {
      user.value = from;
      user.setAttribute("data-follows", "address");
    }
    if (mailboxForm(button)) { showForProtocol(form); followPort(form); }
    showWhen(form);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-preset]");
    if (button) { applyPreset(button); }
  });

  document.addEventListener("htmx:load", function (event) {
    var root = event.detail.elt;
    if (!root.querySelectorAll) { return; }
    root.querySelectorAll("[data-presets][hidden]").forEach(function (presets) {
      presets.hidden = false;  // useful only with this script running
    });
  });

  document.addEventListener("change", function (event) {
    var target = event.target;
    var form = mailboxForm(target);
    if (target.form && target.form.querySelector("[data-show-when]")) { showWhen(target.form); }
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
    } else if (target.name === "username") {
      target.removeAttribute("data-follows");
    } else if (target.name === "address" && mailboxForm(target)) {
      var user = target.form.elements.username;
      if (user && user.hasAttribute("data-follows")) { user.value = target.value.trim(); }
    }
  });

  // After a move with the keyboard, stay on the button that moved the route: after the htmx
  // swap, or on the page a move made without htmx came back to.
  function focusMoved() {
    var focus = document.querySelector("#routes [data-focus]");
    if (focus) { focus.focus(); }
  }
  document.addEventListener("htmx:afterSettle", focusMoved);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", focusMoved);
  } else {
    focusMoved();
  }

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
