// classgrid console: live updates through Server-Sent Events. The server
// renders every page; on a change this fetches the same page again and
// swaps <main>, unless the user is typing in a form or the page shows a
// secret that a refresh would lose. No other host is ever contacted.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var status = document.getElementById("live-status");
  if (!main || !window.EventSource) return;
  var label = status ? status.getAttribute("data-label") : "";
  var pending = false;

  function busy() {
    var a = document.activeElement;
    return a && main.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName);
  }

  function refresh() {
    if (main.getAttribute("data-live") !== "on" || busy()) return;
    if (pending) return;
    pending = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        pending = false;
        if (!text) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var next = doc.getElementById("main");
        if (next && !busy()) main.innerHTML = next.innerHTML;
      })
      .catch(function () { pending = false; });
  }

  var es = new EventSource("/console/events");
  es.addEventListener("open", function () { if (status) status.textContent = "● " + label; });
  es.addEventListener("error", function () { if (status) status.textContent = "○ " + label; });
  es.addEventListener("changed", refresh);
})();
