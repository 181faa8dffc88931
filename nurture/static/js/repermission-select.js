// Re-permission list: a "select all" checkbox in the table head. Without JavaScript the page
// offers links that reload it with every box ticked or none, so this only saves a round trip.
(function () {
  "use strict";
  for (const table of document.querySelectorAll("table[data-select-all]")) {
    const boxes = Array.from(table.querySelectorAll("tbody input[type=checkbox]"));
    const cell = table.querySelector("thead .repermission-check");
    if (!cell || boxes.length === 0) continue;
    const all = document.createElement("input");
    all.type = "checkbox";
    all.className = "admin-check-input";
    all.setAttribute("aria-label", table.dataset.selectAll);
    const sync = function () {
      const ticked = boxes.filter((box) => box.checked).length;
      all.checked = ticked === boxes.length;
      all.indeterminate = ticked > 0 && ticked < boxes.length;
    };
    all.addEventListener("change", function () {
      for (const box of boxes) box.checked = all.checked;
    });
    for (const box of boxes) box.addEventListener("change", sync);
    cell.replaceChildren(all);
    sync();
    const links = table.closest("form").querySelector("[data-select-all-links]");
    if (links) links.hidden = true;
  }
})();
