// Quick exit: blank the page at once, end the launch server-side (a POST carrying the CSRF token:
// a GET or a forged request changes nothing), and replace the location (top window when framed) with
// a neutral page so Back does not return here.
// Shared workstations: the page blanks itself after the idle timeout, and when the last
// tab of a launch closes the launch is ended by a beacon (where the browser sends one).
(function () {
  "use strict";
  var body = document.body;
  var exitUrl = body.getAttribute("data-exit-url") || "about:blank";
  var exitPost = body.getAttribute("data-exit-beacon");
  var csrf = body.getAttribute("data-csrf") || "";
  var lid = body.getAttribute("data-launch");
  var closeUrl = body.getAttribute("data-close-url");
  var aliveUrl = body.getAttribute("data-alive-url");
  var idleSeconds = parseInt(body.getAttribute("data-idle-seconds") || "0", 10);
  var leaving = false;
  var navigatingInApp = false;

  function form() {
    var data = new FormData();
    data.append("csrf_token", csrf);
    return data;
  }

  function post(url) {
    if (!url) { return; }
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(url, form())) { return; }
    } catch (e) { /* fall through to fetch */ }
    try { fetch(url, {method: "POST", body: form(), keepalive: true, credentials: "same-origin"}); } catch (e) { /* ignore */ }
  }

  function blank() {
    // First thing, before any network: nothing of the page stays on screen.
    document.documentElement.style.visibility = "hidden";
    document.body.style.display = "none";
    document.title = "";
    var empty = document.createElement("body");
    document.documentElement.replaceChild(empty, document.body);
  }

  // Returns whether the page is framed (its own window was not the one told to leave).
  function leave() {
    var framed = false;
    try { framed = window.top !== window.self; } catch (e) { framed = true; }
    if (framed) {
      try { window.top.location.replace(exitUrl); return true; } catch (e) { /* cross-origin top without permission */ }
      try { if (window.open(exitUrl, "_top")) { return true; } } catch (e) { /* ignore */ }
    }
    window.location.replace(exitUrl);
    return framed;
  }

  function endThenLeave() {
    // The page is already blank. Leave once the server has ended the launch (or after 400 ms at most): had we
    // left at once, Back could re-ask the server for the page before the exit POST arrived, and get it.
    var gone = false;
    function go() {
      if (gone) { return; }
      gone = true;
      // If the EHR frame refused the top navigation, at least leave this frame. Not when unframed: this window is
      // already leaving, and a second replace on a slow network restarted the navigation it had begun.
      if (leave()) { setTimeout(function () { window.location.replace(exitUrl); }, 300); }
    }
    setTimeout(go, 400);
    try {
      fetch(exitPost, {method: "POST", body: form(), keepalive: true, credentials: "same-origin"}).then(go, go);
    } catch (e) {
      post(exitPost);
      go();
    }
  }

  function quickExit(event) {
    if (event) { event.preventDefault(); event.stopPropagation(); }
    if (leaving) { return; }
    leaving = true;
    blank();
    if (exitPost) { endThenLeave(); } else { leave(); }
  }

  var button = document.getElementById("quick-exit");
  if (button) { button.addEventListener("click", quickExit); }
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" || event.key === "Esc") { quickExit(event); }
  }, true);

  // --- Shared workstations -------------------------------------------------------------------------
  // Open tabs of this launch, counted in localStorage (only the random launch id, no patient data;
  // quick exit's Clear-Site-Data empties it). A tab left by an in-app link or form does not count as closing.
  var key = lid ? "ipv-tabs-" + lid : null;
  function tabs(delta) {
    if (!key) { return 1; }
    try {
      var n = Math.max(0, (parseInt(localStorage.getItem(key) || "0", 10) || 0) + delta);
      if (n === 0) { localStorage.removeItem(key); } else { localStorage.setItem(key, String(n)); }
      return n;
    } catch (e) { return 1; }  // storage blocked (partitioned frame): rely on the idle timeout
  }
  if (key) {
    document.addEventListener("click", function (event) {
      var a = event.target && event.target.closest ? event.target.closest("a[href]") : null;
      if (a && a.origin === window.location.origin && a.target !== "_blank") { navigatingInApp = true; }
    }, true);
    document.addEventListener("submit", function () { navigatingInApp = true; }, true);
    window.addEventListener("pageshow", function (event) {
      tabs(1);
      var nav = (performance.getEntriesByType && performance.getEntriesByType("navigation")[0]) || {};
      // A reload or Back/Forward may follow this page's own closing beacon: say the launch is still open.
      if (nav.type === "reload" || nav.type === "back_forward") {
        setTimeout(function () { post(aliveUrl); }, 500);
      }
    });
    window.addEventListener("pagehide", function () {
      var left = tabs(-1);
      if (left === 0 && !navigatingInApp && !leaving) { post(closeUrl); }
      navigatingInApp = false;
    });
  }
  // The server refuses the launch after the idle timeout; the screen follows so the next person at this
  // workstation does not read the previous patient's page.
  // Typing and clicking on the page count as use: at most once a minute they tell the server (alive).
  if (idleSeconds > 0) {
    var timer = null;
    var lastPing = Date.now();
    var arm = function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(function () { leaving = true; blank(); window.location.replace(exitUrl); }, idleSeconds * 1000);
    };
    ["keydown", "pointerdown", "input"].forEach(function (name) {
      document.addEventListener(name, function () {
        if (Date.now() - lastPing > 60000) { lastPing = Date.now(); post(aliveUrl); }
        arm();
      }, true);
    });
    arm();
  }
  // A page restored from the back-forward cache after quick exit is blanked and left again.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { leaving = false; quickExit(); }
  });
})();
