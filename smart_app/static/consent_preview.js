// Consent page: re-render "exactly what will be written" whenever a choice changes, from the server's
// own plan (POST /l/<lid>/consent/preview; nothing in the URL). Without JavaScript the "Update preview"
// button does the same. The hidden digest follows the preview, so consent is for what is on screen.
(function () {
  "use strict";
  var form = document.getElementById("consent-form");
  if (!form || !window.fetch || !window.FormData) { return; }
  var url = form.getAttribute("data-preview-url");
  var timer = null;
  var seq = 0;
  // While a new preview is on its way the agree button waits (disabled, "Updating…" beside it): pressed then,
  // it would carry no digest and be refused after the patient had already said yes.
  var agree = form.querySelector('button[name="consent"][value="yes"]');
  var updating = document.getElementById("consent-updating");

  function busy(on) {
    if (agree) { agree.disabled = on; }
    if (updating) { updating.hidden = !on; }
  }

  function setList(el, items) {
    while (el.firstChild) { el.removeChild(el.firstChild); }
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.setAttribute("data-kind", item.kind);
      var strong = document.createElement("strong");
      strong.textContent = item.label;
      li.appendChild(strong);
      li.appendChild(document.createTextNode(": " + item.words));
      el.appendChild(li);
    });
  }

  // A read-aloud line as templates/_said.html draws it: the patient's words, the clinician's language beneath.
  function saidLine(line) {
    var p = document.createElement("p");
    p.className = "said";
    var span = document.createElement("span");
    span.className = "read-aloud";
    span.setAttribute("data-audience", "patient");
    span.setAttribute("lang", line.lang);
    span.textContent = line.text;
    p.appendChild(span);
    if (line.clinician) {
      var echo = document.createElement("span");
      echo.className = "clinician-text";
      echo.setAttribute("data-audience", "clinician");
      echo.setAttribute("lang", line.clinician_lang);
      echo.textContent = line.clinician;
      p.appendChild(echo);
    }
    return p;
  }

  function setScript(el, lines) {
    while (el.firstChild) { el.removeChild(el.firstChild); }
    lines.forEach(function (line) { el.appendChild(saidLine(line)); });
  }

  function refresh() {
    var mine = ++seq;
    var digest = document.getElementById("digest");
    digest.value = "";  // until the new preview is shown, consent cannot match anything
    fetch(url, {method: "POST", body: new FormData(form), credentials: "same-origin",
                headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (mine !== seq) { return; }
        busy(false);
        if (!data) { return; }
        var note = document.getElementById("note-preview");
        if (note && data.note !== null) { note.textContent = data.note; }
        setList(document.getElementById("plan-items"), data.items);
        setScript(document.getElementById("consent-question"), data.script);
        digest.value = data.digest;
      })
      .catch(function () {
        // The server re-checks the digest: a press now re-renders the page with the right one.
        if (mine === seq) { busy(false); }
      });
  }

  function schedule() {
    busy(true);
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(refresh, 150);
  }

  form.addEventListener("change", schedule);
  form.addEventListener("input", schedule);
}());
