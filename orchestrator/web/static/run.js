// The run page, live: follows the run's event stream (server-sent events from
// /runs/ID/live), puts each newly rendered part of the page in place and adds the new
// rows of the log, so states, the timeline and the answer change without a reload; and
// shows the text a running activity's model is streaming as it comes (the end of it).
// Without this script the page reloads itself every few seconds instead (<noscript>).
(function () {
  "use strict";
  var main = document.querySelector("main[data-live-url]");
  if (!main || !window.EventSource) {
    return;
  }
  function toEnd() { // live text: its latest lines in sight
    document.querySelectorAll(".live-tokens").forEach(function (box) {
      box.scrollTop = box.scrollHeight;
    });
  }
  toEnd();
  var source = new EventSource(main.getAttribute("data-live-url"));
  document.documentElement.classList.add("live");
  source.addEventListener("view", function (message) {
    var view = JSON.parse(message.data);
    Object.keys(view.parts).forEach(function (id) {
      var part = document.getElementById(id);
      if (part) {
        part.innerHTML = view.parts[id];
      }
    });
    var rows = document.getElementById("log-rows");
    if (rows && view.log) {
      rows.insertAdjacentHTML("beforeend", view.log);
    }
    var count = document.getElementById("log-count");
    if (count) {
      count.textContent = String(view.log_count);
    }
    main.setAttribute("data-status", view.status);
    toEnd();
  });
  source.addEventListener("tokens", function (message) {
    var tokens = JSON.parse(message.data);
    var box = document.getElementById("live-" + tokens.id);
    if (!box) {
      return; // the activity's row is not drawn (yet): the next view brings it
    }
    var follow = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.textContent = tokens.text; // model output: text, never HTML
    box.closest("tr").hidden = !tokens.text; // a model that streams nothing: no row
    if (follow) {
      box.scrollTop = box.scrollHeight;
    }
  });
  source.addEventListener("end", function () {
    source.close();
    document.documentElement.classList.remove("live");
  });
})();
