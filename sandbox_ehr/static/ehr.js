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
