// The run page, live: follows the run's event stream (server-sent events from
// /runs/ID/live) and puts each newly rendered part of the page in place, so states,
// the timeline and the answer change without a reload. Without this script the page
// reloads itself every few seconds instead (a <noscript> refresh).
(function () {
  "use strict";
  var main = document.querySelector("main[data-live-url]");
  if (!main || !window.EventSource) {
    return;
  }
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
    main.setAttribute("data-status", view.status);
  });
  source.addEventListener("end", function () {
    source.close();
    document.documentElement.classList.remove("live");
  });
})();
