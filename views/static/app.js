// mu: local times, confirmations, selecting messages, keyboard shortcuts and a live unread
// badge. Every page works without this file; it only makes them quicker to use.
(function () {
  "use strict";

  // ---- the unread badge and the credits in the header
  var badge = document.getElementById("unread-badge");
  function refreshUnread() {
    if (!badge || document.hidden) return;
    fetch("/api/me", {credentials: "same-origin"}).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (me) {
        if (!me) return;
        badge.textContent = me.unread ? String(me.unread) : "";
        document.title = document.title.replace(/^\(\d+\) /, "");
        if (me.unread) document.title = "(" + me.unread + ") " + document.title;
        var credits = document.getElementById("credits");
        if (credits) credits.textContent = String(me.credits);
      }).catch(function () {});
  }
  if (badge) setInterval(refreshUnread, 20000);

  // ---- dates in the reader's own time zone (the page has them in UTC)
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function localDate(d) { return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()); }
  function localTime(d) { return pad(d.getHours()) + ":" + pad(d.getMinutes()); }
  var today = localDate(new Date());
  Array.prototype.forEach.call(document.querySelectorAll("time[datetime]"), function (el) {
    var d = new Date(el.getAttribute("datetime"));
    if (isNaN(d.getTime())) return;
    var full = localDate(d) + " " + localTime(d);
    // In a list, today's mail shows its time and older mail its date; the tooltip has both.
    el.textContent = el.dataset.style === "short" ? (localDate(d) === today ? localTime(d) : localDate(d)) : full;
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { /* old browser */ }
    el.title = full + (zone ? " (" + zone + ")" : "");
  });

  // ---- destructive forms ask first; without script the server asks on a page of its own
  document.addEventListener("submit", function (e) {
    var form = e.target;
    var question = (e.submitter && e.submitter.dataset.confirm) || form.dataset.confirm;
    if (!question || form.querySelector("input[name=confirm]")) return;
    if (!window.confirm(question)) { e.preventDefault(); return; }
    var yes = document.createElement("input");
    yes.type = "hidden"; yes.name = "confirm"; yes.value = "1";
    form.appendChild(yes);
  });

  // ---- selecting messages in a list
  var rows = Array.prototype.slice.call(document.querySelectorAll("#message-list .message"));
  var picks = Array.prototype.slice.call(document.querySelectorAll("#message-list .pick"));
  var selectAll = document.getElementById("select-all");
  function syncSelectAll() {
    if (!selectAll) return;
    var checked = picks.filter(function (p) { return p.checked; }).length;
    selectAll.checked = checked > 0 && checked === picks.length;
    selectAll.indeterminate = checked > 0 && checked < picks.length;
  }
  if (selectAll) {
    selectAll.parentNode.hidden = false;
    selectAll.addEventListener("change", function () {
      picks.forEach(function (p) { p.checked = selectAll.checked; p.closest(".message").classList.toggle("picked", p.checked); });
    });
  }
  picks.forEach(function (p) {
    p.addEventListener("change", function () { p.closest(".message").classList.toggle("picked", p.checked); syncSelectAll(); });
  });

  var current = -1;
  function focusRow(i) {
    if (!rows.length) return;
    if (current >= 0) rows[current].classList.remove("selected");
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows[current].classList.add("selected");
    var link = rows[current].querySelector("a.subject");
    if (link) link.focus();
  }
  function togglePick() {
    if (current < 0) return;
    var p = rows[current].querySelector(".pick");
    if (!p) return;
    p.checked = !p.checked;
    p.dispatchEvent(new Event("change"));
  }
  // A list shortcut acts on the ticked messages, or on the focused one when none is ticked.
  function batch(action) {
    var form = document.getElementById("batch-form");
    var button = form && form.querySelector("button[value=" + action + "]");
    if (!button) return false;
    if (!picks.some(function (p) { return p.checked; })) {
      if (current < 0) return false;
      var p = rows[current].querySelector(".pick");
      if (!p) return false;
      p.checked = true;
    }
    button.click();
    return true;
  }
  function press(id) { var el = document.getElementById(id); if (el) { el.click(); return true; } return false; }

  document.addEventListener("keydown", function (e) {
    var t = e.target || {}, tag = t.tagName || "";
    // Keys typed into a field are the field's; a ticked checkbox keeps the shortcuts working.
    var typing = /TEXTAREA|SELECT/.test(tag) || t.isContentEditable ||
                 (tag === "INPUT" && !/^(checkbox|radio|button|submit)$/.test(t.type));
    if (e.ctrlKey || e.metaKey || e.altKey || typing) return;
    var done = false;
    switch (e.key) {
      case "c": done = press("compose-link"); break;
      case "r": done = press("reply-link"); break;
      case "j": focusRow(current + 1); done = rows.length > 0; break;
      case "k": focusRow(current - 1); done = rows.length > 0; break;
      case "x": togglePick(); done = current >= 0; break;
      case "/": var q = document.getElementById("q"); if (q) { q.focus(); done = true; } break;
      case "e": done = batch("archive") || press("archive-button"); break;
      case "#": case "Delete": done = batch("delete") || press("delete-button"); break;
      case "!": done = batch("junk") || press("junk-button"); break;
      case "s": done = batch("star") || press("star-button"); break;
      case "I": done = batch("read"); break;
      case "U": done = batch("unread"); break;
    }
    if (done) e.preventDefault();
  });
})();
