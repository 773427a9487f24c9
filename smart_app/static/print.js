// The handout's Print button (inside an EHR frame the browser's own Print menu is awkward to reach).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });
});
