(function () {
  "use strict";
  var q = document.getElementById("q");
  var out = document.getElementById("shown");
  var sections = document.querySelectorAll("[data-section]");
  var rows = document.querySelectorAll("tr[data-package]");
  function has(el, attr, t) {
    return (el.getAttribute(attr) || "").toLowerCase().indexOf(t) >= 0;
  }
  // A section shows when its package's name holds the text (then with all its files),
  // else when some of its files' paths do (then with those files only).
  function apply() {
    var t = q.value.trim().toLowerCase();
    var shown = 0, files = 0;
    sections.forEach(function (s) {
      var all = !t || has(s, "data-package", t);
      var any = false;
      s.querySelectorAll("[data-file]").forEach(function (f) {
        var v = all || has(f, "data-file", t);
        f.hidden = !v;
        any = any || v;
        if (v) files++;
      });
      s.hidden = !(all || any);
      if (!s.hidden) shown++;
    });
    rows.forEach(function (r) {
      r.hidden = !!t && !has(r, "data-package", t) && !has(r, "data-source", t);
    });
    out.textContent = t ? shown + " of " + sections.length + " sections, " + files + " files" : "";
  }
  q.addEventListener("input", function () {
    apply();
    try { history.replaceState(null, "", "#q=" + encodeURIComponent(q.value)); } catch (e) {}
  });
  var m = /^#q=(.*)$/.exec(location.hash);
  if (m) {
    try { q.value = decodeURIComponent(m[1]); } catch (e) { q.value = m[1]; }
  }
  apply();
})();
