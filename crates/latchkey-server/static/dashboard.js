// Latchkey dashboard: the copy button next to a secret shown once.
// Served as a file (the pages' Content-Security-Policy allows no inline
// script). Without JavaScript the secret can still be selected and copied.
(function () {
  "use strict";
  function ready() {
    var buttons = document.querySelectorAll("[data-copy-target]");
    Array.prototype.forEach.call(buttons, function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var target = document.getElementById(button.getAttribute("data-copy-target"));
        if (!target) {
          return;
        }
        var text = target.textContent;
        var done = function () {
          button.textContent = "Copied";
        };
        var fallback = function () {
          var range = document.createRange();
          range.selectNodeContents(target);
          var selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          button.textContent = "Selected: press Ctrl+C";
        };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(text).then(done, fallback);
        } else {
          fallback();
        }
      });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();
