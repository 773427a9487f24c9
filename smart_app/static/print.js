// The handout's Print button (inside an EHR frame the browser's own Print menu is awkward to reach). On the full
// page it waits for the clinician's tick that the patient says the page is safe to carry (data-print-confirm).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-print]").forEach(function (button) {
    var confirm = document.getElementById(button.getAttribute("data-print-confirm") || "");
    if (confirm) {
      var follow = function () { button.disabled = !confirm.checked; };
      confirm.addEventListener("change", follow);
      follow();
    }
    button.addEventListener("click", function () {
      if (confirm && !confirm.checked) { confirm.focus(); return; }
      window.print();
    });
  });
});
