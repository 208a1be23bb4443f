// carve panel: live regions refreshed on server-sent events, copy buttons, the live console.
// Pages work without it; with it they follow changes without reloading and without polling.
(function () {
  "use strict";

  // Regions marked data-live="vm operation:vm_x usage" are re-read from this page's URL
  // when a matching event arrives (kind, kind:subject, or operation:target).
  function matches(tokens, ev) {
    var keys = [ev.kind, ev.kind + ":" + ev.subject];
    if (ev.kind === "operation" && ev.data && ev.data.target) keys.push("operation:" + ev.data.target);
    return tokens.split(/\s+/).some(function (t) { return keys.indexOf(t) >= 0; });
  }

  var pending = {};
  var timer = null;
  function schedule(id) {
    pending[id] = true;
    if (timer) return;
    timer = setTimeout(refresh, 120);
  }

  // A page rendered as a form's answer names its own address; live updates read that one.
  function pageUrl() {
    var el = document.querySelector("[data-page-url]");
    return el ? el.getAttribute("data-page-url") : location.href;
  }

  function refresh() {
    var ids = Object.keys(pending);
    pending = {};
    timer = null;
    fetch(pageUrl(), { headers: { "X-Carve-Live": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok || r.status === 404 ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        // Keep each region (and what has focus) in place; swap only what is inside it.
        var focused = document.activeElement && document.activeElement.id;
        ids.forEach(function (id) {
          var now = document.getElementById(id);
          var next = doc.getElementById(id);
          if (now && next) {
            now.replaceChildren.apply(now, Array.prototype.map.call(next.childNodes, function (n) {
              return document.importNode(n, true);
            }));
          } else if (now && !next) {
            now.setAttribute("data-gone", "true");
          }
        });
        if (focused && document.activeElement === document.body) {
          var again = document.getElementById(focused);
          if (again) again.focus();
        }
        bind(document);
      })
      .catch(function () {});
  }

  // Tells screen readers what changed, in one status line that stays in the page.
  function announce(ev) {
    var box = document.getElementById("announce");
    if (!box || !ev.data) return;
    if (ev.kind === "vm" && ev.data.name) box.textContent = ev.data.name + " is " + (ev.data.deleted ? "deleted" : ev.data.state) + ".";
    else if (ev.kind === "operation" && ev.data.kind) box.textContent = "Operation " + ev.data.kind + " " + ev.data.state + ".";
    else if (ev.kind === "pool" && ev.data.member) box.textContent = "Pool " + ev.data.name + ": a member is " + ev.data.member.state + ".";
  }

  function onEvent(e) {
    var ev;
    try { ev = JSON.parse(e.data); } catch (_) { return; }
    var shown = false;
    document.querySelectorAll("[data-live]").forEach(function (el) {
      if (el.id && matches(el.getAttribute("data-live"), ev)) { schedule(el.id); shown = true; }
    });
    if (shown && ev.kind !== "usage") announce(ev);
  }

  function listen() {
    if (!window.EventSource || !document.querySelector("[data-live]")) return;
    // Resume from the event the page was rendered at, so no change in between is lost.
    var mark = document.querySelector("[data-event-id]");
    var from = mark ? mark.getAttribute("data-event-id") : "";
    var es = new EventSource("/events" + (from ? "?last_event_id=" + encodeURIComponent(from) : ""));
    ["vm", "operation", "usage", "pool"].forEach(function (k) { es.addEventListener(k, onEvent); });
    // Changes were missed for good (the server no longer keeps them): show the page afresh.
    es.addEventListener("reset", function () { location.reload(); });
    es.addEventListener("open", function () { document.documentElement.setAttribute("data-live-ready", "true"); });
  }

  // The console region appends what the VM writes, from its own event stream.
  function consoleStream() {
    var pre = document.querySelector("pre[data-console]");
    if (!pre || !window.EventSource) return;
    var url = pre.getAttribute("data-console") + "?from=" + (pre.getAttribute("data-end") || "0");
    var es = new EventSource(url);
    es.addEventListener("console", function (e) {
      var d;
      try { d = JSON.parse(e.data); } catch (_) { return; }
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      pre.appendChild(document.createTextNode(d.text));
      if (pre.textContent.length > 200000) pre.textContent = pre.textContent.slice(-150000);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    });
    es.addEventListener("stats", function () { schedule("stats"); });
  }

  function bind(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (b) {
      if (b.getAttribute("data-bound")) return;
      b.setAttribute("data-bound", "1");
      b.hidden = false;
      b.addEventListener("click", function () {
        var target = document.getElementById(b.getAttribute("data-copy"));
        if (!target || !navigator.clipboard) return;
        navigator.clipboard.writeText(target.textContent.trim()).then(function () {
          b.textContent = "Copied";
        });
      });
    });
    root.querySelectorAll("pre.console").forEach(function (p) { p.scrollTop = p.scrollHeight; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    // After a form, show the page's own address so that a reload does not post again.
    var own = document.querySelector("[data-page-url]");
    if (own && window.history && history.replaceState && location.pathname !== own.getAttribute("data-page-url")) {
      history.replaceState(null, "", own.getAttribute("data-page-url"));
    }
    bind(document);
    // After a form with errors, start at the first field to fix.
    var invalid = document.querySelector("[aria-invalid=true]");
    if (invalid) invalid.focus();
    listen();
    consoleStream();
  });
})();
