// Page behaviour that needs script (no inline script anywhere: CSP script-src 'self').
import { startUploader } from "./uploader.js";
import { startCharts } from "./charts.js";

function init() {
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", () => {
      for (const box of document.querySelectorAll('#objects input[name="key"]')) box.checked = all.checked;
    });
  }
  for (const button of document.querySelectorAll("button.share")) {
    button.addEventListener("click", () => {
      const field = document.getElementById("share-key");
      field.value = button.dataset.key;
      document.getElementById("share-hours").focus();
    });
  }
  for (const button of document.querySelectorAll("button.rename")) {
    button.addEventListener("click", () => {
      document.getElementById("rename-source").value = button.dataset.source;
      const target = document.getElementById("rename-target");
      target.value = button.dataset.source;
      target.focus();
    });
  }
  const uploader = document.getElementById("uploader");
  if (uploader) startUploader(uploader, document.body.dataset.csrf);
  const charts = document.getElementById("request-charts");
  if (charts) startCharts(charts);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
