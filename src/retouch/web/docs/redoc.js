// ReDoc's start-up, in a file of its own: the page's Content-Security-Policy allows no inline script.
window.addEventListener("DOMContentLoaded", () => {
  window.Redoc.init("/openapi.json", { hideDownloadButton: false }, document.getElementById("redoc"));
});
