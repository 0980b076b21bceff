// The composer: a rich-text editor (Squire, static/vendor/squire) in place of a plain textarea,
// for ticket replies and canned responses. Without JavaScript, or if the editor cannot start,
// the textarea posts plain text as before.
//
// Markup (see templates/tickets/detail.html):
//   [data-composer]                 the field; holds the label and the parts below
//     [data-composer-tools]         hidden until the editor runs; the toolbar is added here
//       select[data-composer-canned]   options whose values are URLs of canned response bodies
//       button[data-composer-insert]   inserts the HTML its URL answers (the ticket history)
//       button[data-composer-snippet]  inserts its text as typed (an email template's {{ variable }})
//     textarea[data-composer-text]  plain text (the form without JavaScript)
//     textarea[data-composer-html]  hidden; the editor's HTML is put here when the form is sent
//   [data-composer-cid]             pasted images are sent as files referred to by cid: (replies);
//                                   without it they stay in the HTML as data: URLs (canned responses)
//
// The server sanitises whatever is posted; the cleaning here keeps the editor itself safe and
// within the page's Content-Security-Policy (no style attributes: they would be refused).
(function () {
  "use strict";

  var KEEP = ["P", "DIV", "BR", "B", "STRONG", "I", "EM", "U", "S", "STRIKE", "A", "UL", "OL", "LI",
    "BLOCKQUOTE", "PRE", "CODE", "H1", "H2", "H3", "H4", "IMG", "TABLE", "THEAD", "TBODY", "TR",
    "TD", "TH", "HR", "SUB", "SUP"];
  var DROP = ["SCRIPT", "STYLE", "TEMPLATE", "IFRAME", "FRAME", "OBJECT", "EMBED", "SVG", "MATH",
    "HEAD", "TITLE", "META", "LINK", "BASE", "NOSCRIPT", "TEXTAREA", "SELECT", "BUTTON", "INPUT",
    "FORM", "VIDEO", "AUDIO"];
  var IMAGE = /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+$/i;
  var LINK = /^(https?:|mailto:)/i;
  var seq = 0;

  // Rebuild the HTML node by node in this document: allowed elements with their few safe
  // attributes; unknown wrappers (font, span, tt…) give up their content; the rest is dropped.
  function copyInto(source, target) {
    Array.prototype.forEach.call(source.childNodes, function (node) {
      if (node.nodeType === 3) {
        target.appendChild(document.createTextNode(node.data));
        return;
      }
      if (node.nodeType !== 1) { return; }
      var name = node.nodeName.toUpperCase();
      if (DROP.indexOf(name) !== -1) { return; }
      if (KEEP.indexOf(name) === -1) {
        copyInto(node, target);
        return;
      }
      var el = document.createElement(name);
      if (name === "A") {
        var href = (node.getAttribute("href") || "").trim();
        if (LINK.test(href)) { el.setAttribute("href", href); }
      } else if (name === "IMG") {
        var src = (node.getAttribute("src") || "").trim();
        if (!IMAGE.test(src)) { return; }
        el.setAttribute("src", src);
        if (node.getAttribute("alt")) { el.setAttribute("alt", node.getAttribute("alt")); }
      } else if (name === "TD" || name === "TH") {
        ["colspan", "rowspan"].forEach(function (attr) {
          var value = node.getAttribute(attr);
          if (value && /^\d{1,3}$/.test(value)) { el.setAttribute(attr, value); }
        });
      }
      copyInto(node, el);
      target.appendChild(el);
    });
  }

  function clean(html) {
    var parsed = new DOMParser().parseFromString(String(html || ""), "text/html");
    var fragment = document.createDocumentFragment();
    copyInto(parsed.body, fragment);
    return fragment;
  }

  function escapeText(text) {
    var div = document.createElement("div");
    return String(text).split("\n").map(function (line) {
      div.textContent = line;
      return "<div>" + (div.innerHTML || "<br>") + "</div>";
    }).join("");
  }

  function say(field, message) {
    var note = field.querySelector(".composer-note");
    if (!note) {
      note = document.createElement("p");
      note.className = "composer-note error-text";
      note.setAttribute("role", "alert");
      field.appendChild(note);
    }
    note.textContent = message;
  }

  function fetchHtml(url, field, use) {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (resp) {
        if (!resp.ok) { throw new Error(String(resp.status)); }
        return resp.text();
      })
      .then(use)
      .catch(function () { say(field, "That could not be loaded. Please try again."); });
  }

  function addFiles(input, files) {
    var transfer = new DataTransfer();
    Array.prototype.forEach.call(input.files, function (f) { transfer.items.add(f); });
    files.forEach(function (f) { transfer.items.add(f); });
    input.files = transfer.files;
  }

  function insertImages(editor, files) {
    files.forEach(function (file) {
      var reader = new FileReader();
      reader.onload = function () { editor.insertImage(reader.result, { alt: file.name || "image" }); };
      reader.readAsDataURL(file);
    });
  }

  // [label, action, the format whose on/off state the button shows (aria-pressed)]
  var BUTTONS = [
    ["Bold", function (e) { if (e.hasFormat("B")) { e.removeBold(); } else { e.bold(); } }, "B"],
    ["Italic", function (e) { if (e.hasFormat("I")) { e.removeItalic(); } else { e.italic(); } }, "I"],
    ["Bulleted list", function (e) { if (e.hasFormat("UL")) { e.removeList(); } else { e.makeUnorderedList(); } }, "UL"],
    ["Numbered list", function (e) { if (e.hasFormat("OL")) { e.removeList(); } else { e.makeOrderedList(); } }, "OL"],
    ["Quote", function (e) { e.increaseQuoteLevel(); }],
    ["Unquote", function (e) { e.decreaseQuoteLevel(); }],
    ["Link", function (e) {
      var url = window.prompt("Link to (https://… or mailto:…)");
      if (url && LINK.test(url.trim())) { e.makeLink(url.trim()); }
    }]
  ];

  function start(field) {
    if (field.composer || typeof window.Squire !== "function") { return; }
    var text = field.querySelector("[data-composer-text]");
    var html = field.querySelector("[data-composer-html]");
    var tools = field.querySelector("[data-composer-tools]");
    var form = field.closest("form");
    if (!text || !html || !form) { return; }
    var label = field.querySelector("label[for='" + text.id + "']");

    var root = document.createElement("div");
    root.className = "composer-editor";
    root.setAttribute("role", "textbox");
    root.setAttribute("aria-multiline", "true");
    if (label) {
      label.id = label.id || "composer-label-" + (++seq);
      label.removeAttribute("for");
      root.setAttribute("aria-labelledby", label.id);
      label.addEventListener("click", function () { field.composer.focus(); });
    }
    ["aria-invalid", "aria-describedby"].forEach(function (attr) {
      if (text.hasAttribute(attr)) {
        root.setAttribute(attr, text.getAttribute(attr));
        text.removeAttribute(attr);
      }
    });
    text.parentNode.insertBefore(root, text);
    text.hidden = true;

    var editor = new window.Squire(root, { sanitizeToDOMFragment: clean });
    field.composer = editor;
    editor.setHTML(html.value.trim() ? html.value : escapeText(text.value));
    // Without pasted images to turn into files, the HTML field follows the editor as it changes,
    // so that checks as you type (htmx on the form's input events) see the body.
    var sync = function () {
      if (field.hasAttribute("data-composer-cid")) { return; }
      html.value = editor.getHTML();
      html.dispatchEvent(new Event("input", { bubbles: true }));
    };
    editor.addEventListener("input", sync);
    // Squire's image-resize handles set style attributes, which the page's policy refuses.
    root.addEventListener("click", function (event) {
      if (event.target.nodeName === "IMG") { event.stopPropagation(); }
    });

    var upload = form.querySelector("input[type=file][name=attachments]");
    editor.addEventListener("pasteImage", function (event) {
      var items = event.detail.clipboardData.items;
      var files = [];
      Array.prototype.forEach.call(items, function (item) {
        if (/^image\//.test(item.type)) { files.push(item.getAsFile()); }
      });
      insertImages(editor, files.filter(Boolean));
    });
    root.addEventListener("dragover", function (event) {
      if (event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types, "Files") !== -1) {
        event.preventDefault();
      }
    });
    root.addEventListener("drop", function (event) {
      var files = event.dataTransfer ? Array.prototype.slice.call(event.dataTransfer.files) : [];
      if (!files.length) { return; }
      event.preventDefault();
      event.stopPropagation();
      insertImages(editor, files.filter(function (f) { return /^image\/(png|jpeg|gif|webp)$/.test(f.type); }));
      var others = files.filter(function (f) { return !/^image\/(png|jpeg|gif|webp)$/.test(f.type); });
      if (others.length && upload) { addFiles(upload, others); }
    }, true);

    if (tools) {
      var bar = document.createElement("span");
      bar.className = "composer-toolbar";
      bar.setAttribute("role", "toolbar");
      bar.setAttribute("aria-label", "Formatting");
      var toggles = [];
      var showState = function () {
        toggles.forEach(function (t) {
          t[0].setAttribute("aria-pressed", editor.hasFormat(t[1]) ? "true" : "false");
        });
      };
      BUTTONS.forEach(function (b) {
        var button = document.createElement("button");
        button.type = "button";
        button.textContent = b[0];
        if (b[2]) {
          button.setAttribute("aria-pressed", "false");
          toggles.push([button, b[2]]);
        }
        button.addEventListener("click", function () { b[1](editor); editor.focus(); showState(); });
        bar.appendChild(button);
      });
      ["pathChange", "select", "cursor", "input"].forEach(function (name) {
        editor.addEventListener(name, showState);
      });
      // Squire's Enter moves the caret into the bold/italic the previous line ended with, even
      // when the technician had switched it off: what was off before a line break stays off.
      root.addEventListener("keydown", function (event) {
        if (event.key !== "Enter") { return; }
        var before = { B: editor.hasFormat("B"), I: editor.hasFormat("I") };
        // The line is split after this handler (Squire's own handlers): look once it is done.
        window.setTimeout(function () {
          if (!before.I && editor.hasFormat("I")) { editor.removeItalic(); }
          if (!before.B && editor.hasFormat("B")) { editor.removeBold(); }
          showState();
        }, 0);
      }, true);
      tools.insertBefore(bar, tools.firstChild);
      var canned = tools.querySelector("[data-composer-canned]");
      if (canned) {
        canned.addEventListener("change", function () {
          var url = canned.value;
          canned.value = "";
          if (url) { fetchHtml(url, field, function (body) { editor.focus(); editor.insertHTML(body); }); }
        });
      }
      Array.prototype.forEach.call(tools.querySelectorAll("[data-composer-snippet]"), function (button) {
        button.addEventListener("click", function () {
          editor.focus();
          editor.insertPlainText(button.getAttribute("data-composer-snippet"), false);
          sync();
        });
      });
      Array.prototype.forEach.call(tools.querySelectorAll("[data-composer-insert]"), function (button) {
        button.addEventListener("click", function () {
          fetchHtml(button.getAttribute("data-composer-insert"), field, function (body) {
            if (!body.trim()) { say(field, "There is no earlier message to quote."); return; }
            editor.moveCursorToEnd();
            editor.insertHTML("<div><br></div>" + body);
          });
        });
      });
      tools.hidden = false;
    }
  }

  // Pasted images travel as files with a Content-ID (a long data: URL would exceed the form
  // field limit, and mail clients block data: images); the HTML refers to them as cid:.
  function beforeSend(form) {
    Array.prototype.forEach.call(form.querySelectorAll("[data-composer]"), function (field) {
      var editor = field.composer;
      if (!editor) { return; }
      var images = [];
      var body = editor.getHTML();
      if (!field.hasAttribute("data-composer-cid")) {
        field.querySelector("[data-composer-html]").value = body;
        return;
      }
      body = body.replace(/src="data:(image\/(png|jpeg|gif|webp));base64,([^"]*)"/gi,
        function (match, type, ext, data) {
          var bytes;
          try { bytes = atob(data.replace(/\s+/g, "")); } catch (e) { return match; }
          var array = new Uint8Array(bytes.length);
          for (var i = 0; i < bytes.length; i += 1) { array[i] = bytes.charCodeAt(i); }
          var cid = "img" + (images.length + 1) + "-" + Math.random().toString(16).slice(2, 10) + "." +
            (ext === "jpeg" ? "jpg" : ext);
          images.push(new File([array], cid, { type: type }));
          return 'src="cid:' + cid + '"';
        });
      field.querySelector("[data-composer-html]").value = body;
      var holder = form.querySelector("input[type=file][name=inline_images]");
      if (images.length && !holder) {
        holder = document.createElement("input");
        holder.type = "file";
        holder.name = "inline_images";
        holder.multiple = true;
        holder.hidden = true;
        form.appendChild(holder);
      }
      if (holder) {
        holder.value = "";
        addFiles(holder, images);
      }
    });
  }

  function startAll(scope) {
    var root = scope && scope.querySelectorAll ? scope : document;
    if (root.matches && root.matches("[data-composer]")) { start(root); }
    Array.prototype.forEach.call(root.querySelectorAll("[data-composer]"), start);
  }

  // Capture phase: runs before htmx reads the form.
  document.addEventListener("submit", function (event) { beforeSend(event.target); }, true);
  document.addEventListener("htmx:load", function (event) { startAll(event.detail.elt); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { startAll(document); });
  } else {
    startAll(document);
  }
}());
