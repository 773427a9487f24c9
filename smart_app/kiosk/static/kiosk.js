// The clinic tablet. Exit (button, Escape, or the hidden gestures on the header: three quick taps or a long press)
// blanks the screen at once and posts the exit form, whose answer wipes the tablet and shows health tips. "Listen"
// plays the question's audio file, or the browser's own speech where there is none. Nothing is stored in the
// browser (no localStorage, sessionStorage, IndexedDB or service worker).
(function () {
  "use strict";
  var form = document.getElementById("exit-form");
  var leaving = false;

  function exit(event) {
    if (!form || leaving) { return; }
    if (event) { event.preventDefault(); }
    leaving = true;
    document.title = "";
    var main = document.getElementById("main");
    if (main) { main.style.visibility = "hidden"; }
    form.submit();
  }

  if (form) {
    form.addEventListener("submit", function (event) { exit(event); });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" || event.key === "Esc") { exit(event); }
    });
    var header = document.getElementById("tablet-header");
    var taps = [];
    var pressTimer = null;
    header.addEventListener("pointerdown", function (event) {
      if (event.target.closest && event.target.closest("button")) { return; }
      var now = Date.now();
      taps = taps.filter(function (t) { return now - t < 900; });
      taps.push(now);
      if (taps.length >= 3) { exit(); return; }
      pressTimer = setTimeout(exit, 800);
    });
    ["pointerup", "pointercancel", "pointerleave"].forEach(function (name) {
      header.addEventListener(name, function () { clearTimeout(pressTimer); });
    });
  }

  var listen = document.getElementById("listen");
  if (listen) {
    listen.addEventListener("click", function () {
      var src = listen.getAttribute("data-audio");
      if (src) {
        var player = new Audio(src);
        player.play().catch(function () { speak(); });
        return;
      }
      speak();
    });
  }

  function speak() {
    if (!("speechSynthesis" in window)) { return; }
    window.speechSynthesis.cancel();
    var utterance = new SpeechSynthesisUtterance(listen.getAttribute("data-text") || "");
    utterance.lang = listen.getAttribute("lang") || document.documentElement.lang;
    utterance.rate = 0.9;
    window.speechSynthesis.speak(utterance);
  }
})();
