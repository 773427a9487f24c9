// Confirmation page: poll the neutral status endpoint (/l/<lid>/progress; no PHI in the URL or the
// answer) until every write is written, failed or "check the chart", and update the page in place.
// Same-origin fetch with the session cookie: works inside the EHR's frame.
(function () {
  "use strict";
  var live = document.getElementById("writeback-live");
  if (!live || !window.fetch) { return; }
  var url = live.getAttribute("data-progress-url");
  var delay = 1000;

  function show(testid, on) {
    var el = live.querySelector('[data-testid="' + testid + '"]');
    if (el) { el.hidden = !on; }
  }

  function apply(data) {
    data.rows.forEach(function (row) {
      var tr = live.querySelector('tr[data-row="' + row.id + '"]');
      if (!tr) { return; }
      tr.setAttribute("data-state", row.state);
      var text = tr.querySelector(".row-text");
      if (text) { text.textContent = row.text; }
      var label = tr.querySelector(".label-text");
      if (label) { label.textContent = row.label_text; }
    });
    show("failed-alert", data.any_failed);
    show("check-alert", data.any_check);
    show("queued-note", data.any_queued);
    show("label-alert", data.any_flagged);
    show("all-written", data.rows.length > 0 && !data.any_queued && !data.any_failed && !data.any_check);
    live.setAttribute("data-done", data.done ? "yes" : "no");
  }

  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}, cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        apply(data);
        if (!data.settled) {
          delay = Math.min(delay * 1.5, 5000);
          setTimeout(poll, delay);
        }
      })
      .catch(function () { setTimeout(poll, 5000); });
  }

  setTimeout(poll, delay);
}());
