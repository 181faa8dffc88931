/* Import progress: polls the job's progress.json every second and updates the bar and the
 * counts; when the job has finished, reloads the page to show the report. Without this
 * script the page refreshes itself (a <noscript> meta refresh), so it works either way. */
(function () {
  "use strict";

  var card = document.getElementById("import-progress");
  if (!card || !window.fetch) {
    return;
  }
  var url = card.getAttribute("data-progress-url");
  var bar = document.getElementById("import-bar");
  var timer = null;

  function show(data) {
    if (bar) {
      bar.max = Math.max(data.rows_total, 1);
      bar.value = data.rows_done;
      bar.textContent = data.percent + " %";
    }
    card.querySelectorAll("[data-field]").forEach(function (node) {
      var name = node.getAttribute("data-field");
      if (Object.prototype.hasOwnProperty.call(data, name)) {
        node.textContent = String(data[name]);
      }
    });
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("progress request failed: " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        show(data);
        if (data.finished || data.state !== card.getAttribute("data-state")) {
          // The report (or the problem) is rendered by the server; a reload shows it.
          window.clearInterval(timer);
          window.location.reload();
        }
      })
      .catch(function () {
        // A lost poll (network hiccup, restart) is retried on the next tick.
      });
  }

  timer = window.setInterval(poll, 1000);
})();
