// mu: keyboard shortcuts and a live unread badge. Everything works without this file.
(function () {
  "use strict";
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

  var rows = Array.prototype.slice.call(document.querySelectorAll("#message-list .message"));
  var selected = -1;
  function select(i) {
    if (!rows.length) return;
    if (selected >= 0) rows[selected].classList.remove("selected");
    selected = Math.max(0, Math.min(rows.length - 1, i));
    rows[selected].classList.add("selected");
    var link = rows[selected].querySelector("a.subject");
    if (link) link.focus();
  }
  document.addEventListener("keydown", function (e) {
    var tag = (e.target && e.target.tagName) || "";
    if (e.ctrlKey || e.metaKey || e.altKey || /INPUT|TEXTAREA|SELECT/.test(tag)) return;
    var go = function (id) { var el = document.getElementById(id); if (el) { e.preventDefault(); el.click(); } };
    switch (e.key) {
      case "c": go("compose-link"); break;
      case "r": go("reply-link"); break;
      case "j": e.preventDefault(); select(selected + 1); break;
      case "k": e.preventDefault(); select(selected - 1); break;
      case "/": var q = document.getElementById("q"); if (q) { e.preventDefault(); q.focus(); } break;
      case "e": case "#":
        var del = document.getElementById("delete-form");
        if (del) { e.preventDefault(); del.submit(); }
        break;
    }
  });
})();
