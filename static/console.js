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
  var term = null, fit = null, ws = null, writer = false;
  // Fits the terminal to its box, but never narrower than the 80 columns a serial console
  // assumes (a narrow screen scrolls sideways instead of cutting lines).
  function fill() {
    fit.fit();
    if (term.cols < 80) term.resize(80, term.rows);
  }

  function say(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  function buttons(connected) {
    open.hidden = connected;
    open.textContent = "Open console";
    watch.hidden = connected;
    close.hidden = !connected;
  }

  function connect(mode) {
    if (ws) {
      // The old socket's events are ignored from here on (see `current`).
      var old = ws;
      ws = null;
      writer = false;
      old.close();
    }
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
          fill();
          // Only the viewer that types sends anything (a watcher's terminal takes no input, and
          // its answers to the guest's terminal queries would only be refused).
          term.onData(function (d) {
            if (ws && ws.readyState === 1 && writer) ws.send(d);
          });
          window.addEventListener("resize", fill);
        }
        var scheme = location.protocol === "https:" ? "wss://" : "ws://";
        var sock = new WebSocket(scheme + location.host + t.url);
        ws = sock;
        sock.binaryType = "arraybuffer";
        // A socket replaced by a newer one says nothing more.
        var current = function () { return ws === sock; };
        sock.onmessage = function (e) {
          if (!current()) return;
          if (typeof e.data === "string") {
            var s = JSON.parse(e.data);
            say(s.message, s.status);
            writer = !!s.writer;
            term.options.disableStdin = !writer;
            // A watcher may take over typing at any time.
            open.hidden = writer;
            open.textContent = writer ? "Open console" : "Take over typing";
            if (s.status === "connected" && writer) term.focus();
          } else {
            term.write(new Uint8Array(e.data));
          }
        };
        sock.onclose = function (e) {
          if (!current()) return;
          ws = null;
          writer = false;
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
      var old = ws;
      ws = null;
      writer = false;
      buttons(false);
      say("Closed. Open the console again to reconnect.", "closed");
      old.close();
    }
  });
})();
