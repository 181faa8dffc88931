// The consent proof's "Print" button, made here so that a page without JavaScript shows no
// button that would do nothing (the browser's own print command works there).
(function () {
  "use strict";
  for (const slot of document.querySelectorAll("[data-print-label]")) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-secondary";
    button.textContent = slot.dataset.printLabel;
    button.addEventListener("click", function () {
      window.print();
    });
    slot.replaceChildren(button);
  }
})();
