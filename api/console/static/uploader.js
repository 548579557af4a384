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
  constructor(root, file, csrf) {
    this.file = file;
    this.csrf = csrf;
    this.bucket = root.dataset.bucket;
    this.key = root.dataset.prefix + file.name;
    this.partSize = Number(root.dataset.partSize);
    this.singleLimit = Number(root.dataset.singleLimit);
    this.cancelled = false;
    this.current = null;
    this.uploadId = null;
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = file.name;
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

export function startUploader(root, csrf) {
  const input = root.querySelector('input[type="file"]');
  input.addEventListener("change", async () => {
    const files = Array.from(input.files);
    input.value = "";
    await Promise.all(files.map((file) => new Upload(root, file, csrf).run()));
    root.dispatchEvent(new CustomEvent("uploads-done", { bubbles: true }));
  });
}
