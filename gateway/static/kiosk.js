// Sync now with live progress: post the form, then follow the round's server-sent events until its summary.
// Without this script the form posts as usual and the dashboard shows the summary when the round is over.
(function () {
  "use strict";
  var form = document.getElementById("sync-form");
  var text = document.getElementById("sync-text");
  var bar = document.getElementById("sync-bar");
  var status = document.getElementById("sync-status");
  if (!form || !text || !bar || !window.EventSource || !window.fetch) {
    return;
  }
  var button = form.querySelector("button");

  function follow() {
    button.disabled = true;
    status.className = "";
    var source = new EventSource(form.getAttribute("data-events"));
    source.onmessage = function (event) {
      var round = JSON.parse(event.data);
      text.textContent = round.text;
      bar.max = Math.max(round.max, 1);
      bar.value = round.value;
      bar.hidden = round.done;
      if (round.done) {
        source.close();
        button.disabled = false;
        status.className = round.failed ? "reason" : "done";
      }
    };
    source.onerror = function () {
      source.close();
      button.disabled = false;
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    button.disabled = true;
    fetch(form.action, {method: "POST", body: new URLSearchParams(new FormData(form)),
                        headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) {
        if (response.ok) {
          follow();
        } else {
          form.submit();
        }
      }, function () {
        form.submit();
      });
  });

  if (form.getAttribute("data-running") === "1") {
    follow();
  }
})();
