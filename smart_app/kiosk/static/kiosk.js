// The clinic tablet. Exit (button, Escape, or the hidden gestures on the header: three quick taps or a long press)
// hides the question at once, silences "Listen", shows the health tips this page carries (the decoy, in the
// patient's language, drawn with the stylesheet already loaded) and posts the exit form, whose answer wipes the
// tablet and brings the server's tips page, which looks the same: nothing the patient sees waits on the network.
// "Listen" plays the question's audio file, or the browser's own speech where there is none. Nothing is stored in
// the browser (no localStorage, sessionStorage, IndexedDB or service worker).
(function () {
  "use strict";
  var form = document.getElementById("exit-form");
  var leaving = false;
  var player = null;

  function exit(event) {
    if (!form || leaving) { return; }
    if (event) { event.preventDefault(); }
    leaving = true;
    document.title = "";
    var main = document.getElementById("main");
    if (main) { main.style.visibility = "hidden"; }
    form.style.display = "none";  // the tips page has no Exit
    silence();
    showDecoy(main);
    form.submit();
  }

  function silence() {
    if (player) { player.pause(); }
    if ("speechSynthesis" in window) { window.speechSynthesis.cancel(); }
  }

  function showDecoy(main) {
    var decoy = document.getElementById("decoy");
    if (!main || !decoy || !decoy.content) { return; }  // stays blank until the server's tips page
    var tips = decoy.content.cloneNode(true);
    // Its link waits for the server's page (a navigation now could cut the exit's request short); it looks the same.
    Array.prototype.forEach.call(tips.querySelectorAll("a"), function (a) {
      a.addEventListener("click", function (event) { event.preventDefault(); });
    });
    while (main.firstChild) { main.removeChild(main.firstChild); }
    main.appendChild(tips);
    window.scrollTo(0, 0);
    main.style.visibility = "";
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
        if (player) { player.pause(); }
        player = new Audio(src);
        player.play().catch(function () { speak(); });
        return;
      }
      speak();
    });
  }

  function speak() {
    // Not after Exit: pausing the player there rejects its pending play(), whose catch lands here.
    if (leaving || !("speechSynthesis" in window)) { return; }
    window.speechSynthesis.cancel();
    var utterance = new SpeechSynthesisUtterance(listen.getAttribute("data-text") || "");
    utterance.lang = listen.getAttribute("lang") || document.documentElement.lang;
    utterance.rate = 0.9;
    window.speechSynthesis.speak(utterance);
  }
})();
