"""Screenshots of every console page, light and dark, for docs/console/ (run by hand after a UI change):

    python tests/helpers/console_screenshots.py docs/console

Starts a throwaway s4-server (IAM on) with a little data, signs in as root in Debian's chromium, and writes
``<page>-light.png`` and ``<page>-dark.png``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.admin_api import ROOT_PASSWORD  # noqa: E402
from helpers.console import console_server  # noqa: E402
from helpers.s3client import make_client  # noqa: E402

PAGES = {"sign-in": "/login", "buckets": "/buckets", "browser": "/buckets/photos?prefix=2026/",
         "object": "/buckets/photos/object?key=2026/beach.jpg", "sql": "/buckets/photos/sql",
         "settings": "/buckets/photos/settings", "dashboard": "/dashboard", "users": "/users",
         "audit": "/audit"}


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server, url = console_server(Path(tmp) / "data")
        try:
            s3 = make_client(server.endpoint)
            for bucket in ("photos", "backups", "logs"):
                s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket="photos", VersioningConfiguration={"Status": "Enabled"})
            for key, size in (("2026/beach.jpg", 180_000), ("2026/city.jpg", 240_000), ("2026/raw/", 0),
                              ("2025/old.jpg", 90_000)):
                s3.put_object(Bucket="photos", Key=key, Body=b"x" * size, Metadata={"camera": "x100"} if size else {})
            s3.put_object(Bucket="photos", Key="2026/beach.jpg", Body=b"y" * 181_000)
            s3.put_object(Bucket="backups", Key="db.dump", Body=b"x" * 1_000_000)
            s3.put_bucket_lifecycle_configuration(Bucket="photos", LifecycleConfiguration={"Rules": [
                {"ID": "raw-cleanup", "Filter": {"Prefix": "2026/raw/"}, "Status": "Enabled",
                 "Expiration": {"Days": 30}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}}]})
            s3.put_bucket_cors(Bucket="photos", CORSConfiguration={"CORSRules": [
                {"ID": "gallery", "AllowedMethods": ["GET", "HEAD"], "AllowedOrigins": ["https://gallery.example"],
                 "MaxAgeSeconds": 600}]})
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
                for scheme in ("light", "dark"):
                    context = browser.new_context(color_scheme=scheme, viewport={"width": 1100, "height": 700})
                    page = context.new_page()
                    page.goto(url + "/login")
                    page.screenshot(path=str(out / f"sign-in-{scheme}.png"))
                    page.get_by_label("Username").fill("root")
                    page.get_by_label("Password").fill(ROOT_PASSWORD)
                    page.get_by_role("button", name="Sign in").click()
                    page.get_by_role("link", name="Buckets", exact=True).wait_for()
                    for name, path in PAGES.items():
                        if name != "sign-in":
                            page.goto(url + path)
                            if name == "dashboard":  # a few points of the request charts drawn, with traffic
                                chart = page.locator('figure[data-chart="rate"]')
                                for points in range(1, 5):
                                    for key in ("2026/beach.jpg", "2026/city.jpg") * 5 * points:
                                        s3.head_object(Bucket="photos", Key=key)
                                    page.wait_for_function("([el, n]) => Number(el.dataset.points) >= n",
                                                           arg=[chart.element_handle(), points])
                            page.screenshot(path=str(out / f"{name}-{scheme}.png"), full_page=True)
                    context.close()
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console"))
