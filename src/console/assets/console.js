// The busbar console's only script. Pages work without it; it adds:
// - refreshing: an element with data-refresh="N" is fetched again every N
//   seconds and swapped for the new copy (the overview);
// - the live tail: <ol data-stream="URL"> receives Server-Sent Events and
//   shows each activity at the top;
// - "select all" checkboxes: data-check-all="G" ticks every data-group="G".
// It never builds HTML from text: every value goes in as textContent.
"use strict";

(function () {
  function refresh(element) {
    var seconds = parseInt(element.getAttribute("data-refresh"), 10);
    if (!(seconds > 0)) return;
    var busy = false;
    window.setInterval(function () {
      if (busy || document.hidden) return;
      // Do not swap the page from under someone who is using it.
      if (element.contains(document.activeElement) && document.activeElement !== element) return;
      busy = true;
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected || !response.ok) throw new Error("status " + response.status);
          return response.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(element.id);
          if (fresh) element.replaceChildren.apply(element, Array.from(fresh.childNodes));
        })
        .catch(function () { /* keep the old copy; try again next time */ })
        .then(function () { busy = false; });
    }, seconds * 1000);
  }

  function text(tag, className, value) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    node.textContent = value;
    return node;
  }

  function when(iso) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) return iso;
    return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function activityItem(a) {
    var li = document.createElement("li");
    li.className = "activity fresh outcome-" + a.outcome;
    var time = text("time", "", when(a.at));
    time.setAttribute("datetime", a.at);
    li.appendChild(time);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(text("span", "badge status-" + a.outcome, a.outcome));
    li.appendChild(document.createTextNode(" "));
    if (a.outcome !== "missed") {
      var link = text("a", "", a.source + "/" + a.event);
      link.href = "/console/events/" + encodeURIComponent(a.event_id);
      li.appendChild(link);
    }
    if (a.integration) {
      li.appendChild(document.createTextNode(" "));
      li.appendChild(text("span", "via", "→ " + a.integration));
    }
    if (a.error) li.appendChild(text("span", "error-text", a.error));
    return li;
  }

  function tail(list) {
    var url = list.getAttribute("data-stream");
    var status = document.getElementById("tail-status");
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    source.addEventListener("open", function () {
      if (status) status.textContent = "Live: new activity appears at the top as it happens.";
      list.setAttribute("data-live", "yes");
    });
    source.addEventListener("error", function () {
      if (status) status.textContent = "Disconnected; reconnecting…";
      list.setAttribute("data-live", "no");
    });
    source.addEventListener("activity", function (message) {
      var activity;
      try { activity = JSON.parse(message.data); } catch (e) { return; }
      var empty = document.getElementById("tail-empty");
      if (empty) empty.remove();
      list.insertBefore(activityItem(activity), list.firstChild);
      while (list.children.length > 500) list.removeChild(list.lastChild);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function checkAll(box) {
    box.addEventListener("change", function () {
      var group = box.getAttribute("data-check-all");
      document.querySelectorAll('input[data-group="' + group + '"]').forEach(function (item) {
        item.checked = box.checked;
      });
    });
  }

  function start() {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
    document.querySelectorAll("ol[data-stream]").forEach(tail);
    document.querySelectorAll("input[data-check-all]").forEach(checkAll);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
