/* Segment builder: shows only the operators and inputs that fit each row's field, and keeps a
 * live count and sample of the matching contacts while the marketer edits (a debounced POST of
 * the form to the preview endpoint). Without this script the page is a plain form whose
 * "Preview" button shows the same on the server-rendered page. */
(function () {
  "use strict";

  var form = document.getElementById("segment-form");
  var preview = document.getElementById("segment-preview");
  if (!form || !preview || !window.fetch || !window.FormData) {
    return;
  }
  var previewUrl = form.getAttribute("data-preview-url");
  var summary = document.getElementById("segment-summary");
  var sampleWrap = document.getElementById("segment-sample-wrap");
  var sampleBody = document.querySelector("#segment-sample tbody");
  var DELAY_MS = 400;
  var timer = null;
  var latest = 0;

  // -- fitting operators and inputs to the field ------------------------------------------

  function selectedOption(select) {
    return select.selectedIndex >= 0 ? select.options[select.selectedIndex] : null;
  }

  function fitRow(row) {
    var subject = row.querySelector("[data-role=subject]");
    var op = row.querySelector("[data-role=op]");
    var chosen = selectedOption(subject);
    var type = chosen ? chosen.getAttribute("data-type") : null;
    var groups = op.querySelectorAll("optgroup");
    var firstFitting = null;
    groups.forEach(function (group) {
      var fits = !type || group.getAttribute("data-type") === type;
      group.hidden = !fits;
      group.disabled = !fits;
      if (fits && type && !firstFitting) {
        firstFitting = group.querySelector("option");
      }
    });
    var current = selectedOption(op);
    var currentFits = current && current.parentNode.tagName === "OPTGROUP" && !current.parentNode.disabled;
    if (type && !currentFits && firstFitting) {
      firstFitting.selected = true;
      current = firstFitting;
    }
    var inputs = type && current ? (current.getAttribute("data-inputs") || "").split(" ") : [];
    row.querySelectorAll("[data-input]").forEach(function (box) {
      // A row without a field shows every input, as the page does without this script.
      box.hidden = Boolean(type) && inputs.indexOf(box.getAttribute("data-input")) < 0;
    });
    var value = row.querySelector("[data-input=value] input");
    var list = chosen && chosen.value ? "segment-values-" + chosen.value.replace(/\./g, "-") : "";
    if (list && document.getElementById(list)) {
      value.setAttribute("list", list);
    } else {
      value.removeAttribute("list");
    }
  }

  // -- the live preview -------------------------------------------------------------------

  function showErrors(errors) {
    form.querySelectorAll(".segment-row").forEach(function (row) {
      var key = "row-" + row.getAttribute("data-row");
      var list = document.getElementById("segment-" + key + "-errors");
      list.textContent = "";
      if (errors[key]) {
        var item = document.createElement("li");
        item.textContent = errors[key];
        list.appendChild(item);
      }
      list.hidden = !errors[key];
      row.classList.toggle("segment-row-invalid", Boolean(errors[key]));
    });
    var match = document.getElementById("segment-match-errors");
    match.textContent = "";
    if (errors.match) {
      var item = document.createElement("li");
      item.textContent = errors.match;
      match.appendChild(item);
    }
    match.hidden = !errors.match;
  }

  function showSample(sample) {
    sampleBody.textContent = "";
    sample.forEach(function (contact) {
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      th.scope = "row";
      var link = document.createElement("a");
      link.href = contact.url;
      link.textContent = contact.email;
      th.appendChild(link);
      var td = document.createElement("td");
      td.textContent = contact.name;
      tr.appendChild(th);
      tr.appendChild(td);
      sampleBody.appendChild(tr);
    });
    sampleWrap.hidden = sample.length === 0;
  }

  function refresh() {
    var ticket = ++latest;
    var data = new FormData(form);
    data.delete("action");
    summary.textContent = preview.getAttribute("data-text-busy");
    fetch(previewUrl, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (type.indexOf("application/json") < 0) {
          throw new Error("preview answered " + response.status);
        }
        return response.json();
      })
      .then(function (body) {
        if (ticket !== latest) {
          return; // an older answer arriving after a newer request
        }
        showErrors(body.errors || {});
        if (body.count === null || body.count === undefined) {
          summary.textContent = body.errors && body.errors.form
            ? body.errors.form
            : preview.getAttribute("data-text-invalid");
          showSample([]);
          return;
        }
        summary.textContent = body.summary;
        showSample(body.sample || []);
      })
      .catch(function () {
        if (ticket === latest) {
          summary.textContent = preview.getAttribute("data-text-failed");
        }
      });
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, DELAY_MS);
  }

  form.querySelectorAll(".segment-row").forEach(fitRow);
  form.addEventListener("change", function (event) {
    var row = event.target.closest(".segment-row");
    if (row && event.target.matches("[data-role=subject], [data-role=op]")) {
      fitRow(row);
    }
    schedule();
  });
  form.addEventListener("input", function (event) {
    if (event.target.matches("input[type=text]") && event.target.name !== "name") {
      schedule();
    }
  });
})();
