// EHR simulator: list only the chosen patient's encounters (the server checks again on launch).
(function () {
  "use strict";
  var patient = document.getElementById("patient");
  var encounter = document.getElementById("encounter");
  if (!patient || !encounter) { return; }
  function filter() {
    var chosen = patient.value;
    var keep = false;
    Array.prototype.forEach.call(encounter.options, function (opt) {
      var owner = opt.getAttribute("data-patient");
      if (owner === null) { return; }  // "No encounter"
      var mine = owner === chosen;
      opt.hidden = !mine;
      opt.disabled = !mine;
      if (mine && opt.selected) { keep = true; }
    });
    if (!keep) { encounter.value = ""; }
  }
  patient.addEventListener("change", filter);
  filter();
  // "New window": the launch opens as a new top-level window (some EHRs launch apps that way).
  var form = document.getElementById("launch-form");
  var newWindow = document.getElementById("new_window");
  if (form && newWindow) {
    var target = function () { form.target = newWindow.checked ? "_blank" : ""; };
    newWindow.addEventListener("change", target);
    target();
  }
}());
// CDS Hooks (sandbox_ehr/cds_client.py): opening a patient calls the app's patient-view service and shows
// its cards. A card's smart link launches the app for the same patient, clinician and encounter.
(function () {
  "use strict";
  var box = document.getElementById("cds-cards");
  var form = document.getElementById("launch-form");
  if (!box || !form) { return; }
  var patient = document.getElementById("patient");
  var practitioner = document.getElementById("practitioner");
  var encounter = document.getElementById("encounter");
  function feedback(card, outcome) {
    var body = new URLSearchParams({card: card, outcome: outcome});
    return fetch(box.getAttribute("data-feedback-url"), {method: "POST", body: body}).catch(function () {});
  }
  function show(cards) {
    box.textContent = "";
    cards.forEach(function (card) {
      var el = document.createElement("article");
      el.className = "cds-card cds-" + (card.indicator || "info");
      var h = document.createElement("h2");
      h.textContent = card.summary || "";
      el.appendChild(h);
      if (card.detail) { var p = document.createElement("p"); p.textContent = card.detail; el.appendChild(p); }
      if (card.source) { var s = document.createElement("p"); s.className = "cds-source"; s.textContent = card.source; el.appendChild(s); }
      (card.links || []).forEach(function (link) {
        if (!link.launchable) { return; }
        var b = document.createElement("button");
        b.type = "button";
        b.className = "cds-link";
        b.textContent = link.label;
        b.addEventListener("click", function () {
          feedback(card.uuid, "accepted").then(function () { form.requestSubmit(); });
        });
        el.appendChild(b);
      });
      var d = document.createElement("button");
      d.type = "button";
      d.className = "cds-dismiss";
      d.textContent = "Dismiss";
      d.addEventListener("click", function () { feedback(card.uuid, "overridden"); el.remove(); });
      el.appendChild(d);
      box.appendChild(el);
    });
    box.setAttribute("data-state", "done");
  }
  function open() {
    box.setAttribute("data-state", "loading");
    var body = new URLSearchParams({patient: patient.value, practitioner: practitioner.value,
                                    encounter: encounter ? encounter.value : ""});
    fetch(box.getAttribute("data-hook-url"), {method: "POST", body: body})
      .then(function (r) { return r.json(); })
      .then(function (j) { show(j.cards || []); })
      .catch(function () { box.textContent = ""; box.setAttribute("data-state", "error"); });
  }
  patient.addEventListener("change", open);
  open();
}());
