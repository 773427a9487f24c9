// Quick exit: blank the page at once, end the launch server-side, and replace the
// location (top window when framed) with a neutral page so Back does not return here.
(function () {
  "use strict";
  var body = document.body;
  var exitUrl = body.getAttribute("data-exit-url") || "about:blank";
  var beacon = body.getAttribute("data-exit-beacon");
  var leaving = false;

  function blank() {
    // First thing, before any network: nothing of the page stays on screen.
    document.documentElement.style.visibility = "hidden";
    document.body.style.display = "none";
    document.title = "";
    var empty = document.createElement("body");
    document.documentElement.replaceChild(empty, document.body);
  }

  function endLaunch() {
    if (!beacon) { return; }
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(beacon)) { return; }
    } catch (e) { /* fall through to fetch */ }
    try { fetch(beacon, {method: "POST", keepalive: true, credentials: "same-origin"}); } catch (e) { /* ignore */ }
  }

  function leave() {
    var framed = false;
    try { framed = window.top !== window.self; } catch (e) { framed = true; }
    if (framed) {
      try { window.top.location.replace(exitUrl); return; } catch (e) { /* cross-origin top without permission */ }
      try { if (window.open(exitUrl, "_top")) { return; } } catch (e) { /* ignore */ }
    }
    window.location.replace(exitUrl);
  }

  function quickExit(event) {
    if (event) { event.preventDefault(); event.stopPropagation(); }
    if (leaving) { return; }
    leaving = true;
    blank();
    endLaunch();
    leave();
    // If the EHR frame refused the top navigation, at least leave this frame.
    setTimeout(function () { window.location.replace(exitUrl); }, 300);
  }

  var button = document.getElementById("quick-exit");
  if (button) { button.addEventListener("click", quickExit); }
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" || event.key === "Esc") { quickExit(event); }
  }, true);
  // A page restored from the back-forward cache is blanked and left again.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { leaving = false; quickExit(); }
  });
})();
