// Keyhold console: the only script (served from the binary; the
// Content-Security-Policy allows no inline script). A form sent once is
// not sent twice by a second click while its answer is on the way.
document.addEventListener("submit", function (e) {
  var b = e.target.querySelectorAll("button[type=submit]");
  for (var i = 0; i < b.length; i++) { b[i].disabled = true; }
});
