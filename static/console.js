// The VM page's console: xterm.js over carve's console WebSocket. A ticket is minted by a
// same-origin form post (session and CSRF), then the WebSocket opens with it at once.
(function () {
  "use strict";
  var card = document.getElementById("console-card");
  if (!card || !window.Terminal) return;
  var box = document.getElementById("terminal");
  var status = document.getElementById("console-status");
  var open = document.getElementById("console-open");
  var watch = document.getElementById("console-watch");
  var close = document.getElementById("console-close");
  var term = null, fit = null, ws = null;

  function say(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  function buttons(connected) {
    open.hidden = connected;
    watch.hidden = connected;
    close.hidden = !connected;
  }

  function connect(mode) {
    if (ws) ws.close();
    say("Connecting…", "connecting");
    buttons(true);
    var body = new URLSearchParams({ csrf: card.dataset.csrf, mode: mode });
    fetch(card.dataset.ticket, { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) {
        return r.text().then(function (text) {
          var j = {};
          try { j = JSON.parse(text); } catch (e) { /* an error page */ }
          if (!r.ok) throw new Error(j.detail || "the server answered " + r.status + "; reload the page and try again");
          return j;
        });
      })
      .then(function (t) {
        if (!term) {
          term = new window.Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000, fontSize: 14 });
          fit = new window.FitAddon.FitAddon();
          term.loadAddon(fit);
          box.hidden = false;
          term.open(box);
          fit.fit();
          term.onData(function (d) {
            if (ws && ws.readyState === 1) ws.send(d);
          });
          window.addEventListener("resize", function () { fit.fit(); });
        }
        var scheme = location.protocol === "https:" ? "wss://" : "ws://";
        ws = new WebSocket(scheme + location.host + t.url);
        ws.binaryType = "arraybuffer";
        ws.onmessage = function (e) {
          if (typeof e.data === "string") {
            var s = JSON.parse(e.data);
            say(s.message, s.status);
            if (s.status === "connected" && s.writer) term.focus();
          } else {
            term.write(new Uint8Array(e.data));
          }
        };
        ws.onclose = function (e) {
          ws = null;
          buttons(false);
          if (status.dataset.state === "connected" || status.dataset.state === "connecting") {
            say("Closed" + (e.reason ? ": " + e.reason : "") + ". Open the console again to reconnect.", "closed");
          }
        };
      })
      .catch(function (err) {
        buttons(false);
        say("Could not open the console: " + err.message, "error");
      });
  }

  open.addEventListener("click", function () { connect("write"); });
  watch.addEventListener("click", function () { connect("read"); });
  close.addEventListener("click", function () {
    if (ws) {
      say("Closed. Open the console again to reconnect.", "closed");
      ws.close();
    }
  });
})();
