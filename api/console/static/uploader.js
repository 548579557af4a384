// Uploads with per-file progress. Small files: one PUT. Bigger: a multipart upload driven from here, one part per
// request (each retried), completed with the parts' ETags, or aborted on cancel (nothing left behind).
const RETRIES = 3;

function send(method, url, csrf, body, onProgress, headers = {}) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.open(method, url);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    if (onProgress) xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.responseText ? JSON.parse(xhr.responseText) : {});
      else reject(new Error(`${method} failed: ${xhr.status}`));
    });
    xhr.addEventListener("error", () => reject(new Error("network error")));
    xhr.addEventListener("abort", () => reject(new DOMException("cancelled", "AbortError")));
    xhr.send(body);
  });
  return { xhr, done };
}

class Upload {
  constructor(root, file, csrf, path) {
    this.file = file;
    this.csrf = csrf;
    this.bucket = root.dataset.bucket;
    this.key = root.dataset.prefix + (path || file.webkitRelativePath || file.name);
    this.partSize = Number(root.dataset.partSize);
    this.singleLimit = Number(root.dataset.singleLimit);
    this.cancelled = false;
    this.current = null;
    this.uploadId = null;
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = path || file.webkitRelativePath || file.name;
    this.bar = document.createElement("progress");
    this.bar.max = file.size || 1;
    this.bar.value = 0;
    this.bar.setAttribute("aria-label", `Progress of ${file.name}`);
    this.status = document.createElement("span");
    this.status.className = "upload-status";
    this.status.textContent = "uploading";
    this.cancelButton = document.createElement("button");
    this.cancelButton.type = "button";
    this.cancelButton.textContent = `Cancel ${file.name}`;
    this.cancelButton.addEventListener("click", () => this.cancel());
    item.append(name, this.bar, this.status, this.cancelButton);
    root.querySelector("#upload-list").append(item);
  }

  url(path, params) {
    const query = new URLSearchParams({ key: this.key, ...params });
    return `/api/buckets/${encodeURIComponent(this.bucket)}${path}?${query}`;
  }

  async run() {
    try {
      if (this.file.size <= this.singleLimit) {
        await this.attempt(() => this.request("PUT", this.url("/object"), this.file, (n) => { this.bar.value = n; },
          { "X-Object-Content-Type": this.file.type || "application/octet-stream" }));
      } else {
        await this.multipart();
      }
      this.bar.value = this.bar.max;
      this.status.textContent = "done";
      this.cancelButton.remove();
    } catch (err) {
      this.status.textContent = this.cancelled ? "cancelled" : `failed: ${err.message}`;
      this.cancelButton.remove();
    }
  }

  async multipart() {
    const created = await this.request("POST", this.url("/uploads"), null, null,
      { "X-Object-Content-Type": this.file.type || "application/octet-stream" });
    this.uploadId = created.upload_id;
    this.status.textContent = "uploading in parts";
    const parts = [];
    for (let start = 0, part = 1; start < this.file.size; start += this.partSize, part++) {
      const blob = this.file.slice(start, start + this.partSize);
      const sent = await this.attempt(() => this.request("PUT", this.url("/uploads/part",
        { upload_id: this.uploadId, part: String(part) }), blob, (n) => { this.bar.value = start + n; }));
      parts.push({ part, etag: sent.etag });
      this.bar.value = start + blob.size;
    }
    await this.request("POST", this.url("/uploads/complete", { upload_id: this.uploadId }),
      JSON.stringify({ parts }), null, { "Content-Type": "application/json" });
  }

  request(method, url, body, onProgress, headers = {}) {
    if (this.cancelled) return Promise.reject(new DOMException("cancelled", "AbortError"));
    this.current = send(method, url, this.csrf, body, onProgress, headers);
    return this.current.done;
  }

  async attempt(fn) {
    for (let tries = 1; ; tries++) {
      try {
        return await fn();
      } catch (err) {
        if (this.cancelled || err.name === "AbortError" || tries >= RETRIES) throw err;
        this.status.textContent = `retrying (${tries})`;
      }
    }
  }

  async cancel() {
    this.cancelled = true;
    if (this.current) this.current.xhr.abort();
    if (this.uploadId) {
      const id = this.uploadId;
      this.uploadId = null;
      await send("DELETE", this.url("/uploads", { upload_id: id }), this.csrf, null, null).done.catch(() => {});
    }
    this.status.textContent = "cancelled";
  }
}

// A dropped folder's files, with their paths below it (FileSystemEntry API); plain files as they are.
async function entries(entry, path) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return [[file, path + file.name]];
  }
  const reader = entry.createReader();
  const found = [];
  for (;;) {  // readEntries answers in batches until an empty one
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    for (const child of batch) found.push(...(await entries(child, `${path}${entry.name}/`)));
  }
  return found;
}

export function startUploader(root, csrf) {
  const start = async (pairs) => {
    await Promise.all(pairs.map(([file, path]) => new Upload(root, file, csrf, path).run()));
    root.dispatchEvent(new CustomEvent("uploads-done", { bubbles: true }));
  };
  for (const input of root.querySelectorAll('input[type="file"]')) {
    input.addEventListener("change", () => {
      const files = Array.from(input.files);
      input.value = "";
      start(files.map((file) => [file, file.webkitRelativePath || file.name]));
    });
  }
  const zone = root.querySelector(".drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const items = Array.from(event.dataTransfer.items || []);
    const roots = items.map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
    if (roots.length && roots.every((entry) => entry)) {
      const pairs = [];
      for (const entry of roots) pairs.push(...(await entries(entry, "")));
      start(pairs);
    } else {
      start(Array.from(event.dataTransfer.files).map((file) => [file, file.name]));
    }
  });
}
