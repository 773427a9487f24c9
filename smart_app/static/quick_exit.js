// Quick exit: blank the page at once, end the launch server-side, and replace the
// location (top window when framed) with a neutral page so Back does not return here.
(function () {
  "use strict";
  var body = document.body;
  var exitUrl = body.getAttribute("data-exit-url") || "about:blank";
  var beacon = body.getAttribute("data-exit-beacon");

  function quickExit(event) {
    if (event) { event.preventDefault(); }
    document.documentElement.style.visibility = "hidden";
    document.title = "";
    while (body.firstChild) { body.removeChild(body.firstChild); }
    try { if (beacon && navigator.sendBeacon) { navigator.sendBeacon(beacon); } } catch (e) { /* ignore */ }
    try {
      window.top.location.replace(exitUrl);
    } catch (e) {
      window.location.replace(exitUrl);
    }
  }

  var button = document.getElementById("quick-exit");
  if (button) { button.addEventListener("click", quickExit); }
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" || event.key === "Esc") { quickExit(event); }
  }, true);
  // Pages restored from the back-forward cache are blanked too.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { quickExit(); }
  });
})();
