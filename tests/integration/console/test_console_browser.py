"""The web console in a real browser (Playwright + Debian's chromium) against a real s4-server (IAM on).

Every test fails on any page error, console error or CSP violation (helpers/browser.py). One browser and one
server for the module; each test makes its own bucket.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers.admin_api import ROOT_PASSWORD
from helpers.browser import PageProblems, axe_violations, check_page, open_page
from helpers.console import console_server
from helpers.s3client import make_client
from helpers.server import ServerProcess

pytest.importorskip("playwright.sync_api")
XSS_KEY = "<img src=x onerror=alert(1)>"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    server, url = console_server(tmp_path_factory.mktemp("console-browser") / "data", workers=1)
    yield server, url
    server.stop()


@pytest.fixture(scope="module")
def s3(site: tuple[ServerProcess, str]) -> Any:
    return make_client(site[0].endpoint)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "big.bin"
    path.write_bytes(hashlib.shake_256(b"console").digest(40 * MIB))
    return path


@pytest.fixture(scope="module")
def signed_in_state(browser: Any, site: tuple[ServerProcess, str]) -> Any:
    """root's session (cookies), signed in once for the module: each test's context starts from it."""
    context, page, problems = open_page(browser)
    try:
        sign_in(page, site[1])
        check_page(page, problems)
        return context.storage_state()
    finally:
        context.close()


@pytest.fixture
def signed_in(browser: Any, signed_in_state: Any) -> Iterator[tuple[Any, PageProblems]]:
    """A page signed in as root; the test fails on any page error, console error or CSP violation."""
    context, page, problems = open_page(browser, storage_state=signed_in_state)
    try:
        yield page, problems
        check_page(page, problems)
    finally:
        context.close()


@pytest.fixture
def page(signed_in: tuple[Any, PageProblems]) -> Any:
    return signed_in[0]


def sign_in(page: Any, url: str, username: str = "root", password: str = ROOT_PASSWORD) -> None:
    page.goto(url + "/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Buckets", exact=True).wait_for()


def _bucket(s3: Any) -> str:
    name = f"ui-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def _until(page: Any, check: Any, what: str, timeout_s: float = 30.0) -> None:
    """Poll with a deadline; waiting through the page lets Playwright deliver its events (route handlers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {what}")


def _part(number: int) -> re.Pattern[str]:
    return re.compile(rf"/uploads/part\?(.*&)?part={number}(&|$)")


def test_console_sign_in_by_keyboard_and_create_bucket(page_and_problems: tuple[Any, PageProblems],
                                                       site: tuple[ServerProcess, str], s3: Any) -> None:
    page, _ = page_and_problems
    page.goto(site[1] + "/")
    page.get_by_label("Username").focus()  # keyboard only from here: type, Tab, type, Enter
    page.keyboard.type("root")
    page.keyboard.press("Tab")
    page.keyboard.type(ROOT_PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("link", name="Buckets", exact=True).wait_for()
    name = f"ui-{uuid.uuid4().hex[:10]}"
    page.get_by_role("button", name="Create bucket").click()
    page.get_by_label("Bucket name").fill(name)
    page.get_by_role("button", name="Create", exact=True).click()
    page.get_by_role("link", name=name).click()
    page.get_by_role("heading", name=name).wait_for()
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    page.get_by_role("link", name="Buckets", exact=True).click()
    page.get_by_role("button", name=f"Enable versioning of {name}").click()
    page.get_by_role("button", name=f"Suspend versioning of {name}").wait_for()
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    s3.put_object(Bucket=name, Key="left/behind.txt", Body=b"x")
    page.get_by_role("button", name=f"Delete bucket {name}").click()
    page.get_by_label("Delete everything in it too").check()
    page.get_by_label("Type the bucket name to confirm").fill(name)
    page.get_by_role("button", name="Delete bucket", exact=True).click()
    page.get_by_role("link", name=name).wait_for(state="detached")
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_console_upload_40mib_multipart_with_progress(page: Any, site: tuple[ServerProcess, str], s3: Any,
                                                       big_file: Path) -> None:
    name = _bucket(s3)
    page.goto(f"{site[1]}/buckets/{name}")
    held: list[Any] = []
    page.route(_part(3), lambda route: held.append(route))  # hold part 3 to look at progress
    page.get_by_label("Upload files").set_input_files(str(big_file))
    bar = page.get_by_label("Progress of big.bin")
    _until(page, lambda: bool(held), "part 3 to be sent")
    value, top = bar.evaluate("b => b.value"), bar.evaluate("b => b.max")
    assert 16 * MIB <= value < top, (value, top)  # two parts done, not all: progress seen mid-way
    held[0].continue_()
    page.get_by_text("done", exact=True).wait_for(timeout=120_000)
    head = s3.head_object(Bucket=name, Key="big.bin")
    assert head["ContentLength"] == 40 * MIB and head["ETag"].endswith('-5"')
    body = s3.get_object(Bucket=name, Key="big.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(big_file.read_bytes()).digest()


def test_console_cancelled_upload_leaves_no_upload(page: Any, site: tuple[ServerProcess, str], s3: Any,
                                                   big_file: Path) -> None:
    name = _bucket(s3)
    page.goto(f"{site[1]}/buckets/{name}")
    held: list[Any] = []
    page.route(_part(2), lambda route: held.append(route))
    page.get_by_label("Upload files").set_input_files(str(big_file))
    _until(page, lambda: bool(held), "part 2 to be sent")
    assert len(s3.list_multipart_uploads(Bucket=name).get("Uploads", [])) == 1
    page.get_by_role("button", name="Cancel big.bin").click()
    page.get_by_text("cancelled", exact=True).wait_for()
    page.unroute(_part(2))
    _until(page, lambda: not s3.list_multipart_uploads(Bucket=name).get("Uploads"), "the upload to be aborted")
    assert s3.list_objects_v2(Bucket=name).get("KeyCount") == 0


def test_console_key_with_markup_shown_as_text(signed_in: tuple[Any, PageProblems],
                                               site: tuple[ServerProcess, str], s3: Any) -> None:
    page, problems = signed_in
    name = _bucket(s3)
    s3.put_object(Bucket=name, Key=XSS_KEY, Body=b"x")
    page.goto(f"{site[1]}/buckets/{name}")
    page.get_by_text(XSS_KEY, exact=True).wait_for()
    assert page.locator("img").count() == 0 and not problems.dialogs


def test_console_download_share_and_delete(page: Any, site: tuple[ServerProcess, str], s3: Any) -> None:
    name = _bucket(s3)
    for key in ("docs/a.txt", "docs/b.txt", "docs/c.txt"):
        s3.put_object(Bucket=name, Key=key, Body=key.encode())
    page.goto(f"{site[1]}/buckets/{name}")
    page.get_by_role("link", name="docs/").click()
    page.get_by_role("navigation", name="Breadcrumbs").get_by_role("link", name="docs").wait_for()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download a.txt").click()
    assert Path(download.value.path()).read_bytes() == b"docs/a.txt"
    page.goto(f"{site[1]}/users")  # the share link is signed with the user's own S3 key: make one first
    page.get_by_role("button", name="Create S3 key for root").click()
    page.get_by_label("Secret key").wait_for()
    page.goto(f"{site[1]}/buckets/{name}?prefix=docs/")
    page.get_by_role("button", name="Share b.txt").click()
    page.get_by_label("Expires in hours (up to 168)").fill("168")
    page.get_by_role("button", name="Create share link").click()
    link = page.get_by_label("Share link").input_value()
    page.get_by_label("Select a.txt").check()
    page.get_by_label("Select c.txt").check()
    page.get_by_role("button", name="Delete selected").click()  # confirmed (the dialog is accepted)
    page.get_by_text("b.txt", exact=True).wait_for()
    page.get_by_text("a.txt", exact=True).wait_for(state="detached")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]] == ["docs/b.txt"]
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()
    assert requests.get(link, timeout=60).content == b"docs/b.txt"  # the link outlives the session


def test_console_user_created_and_signed_in_with(page: Any, browser: Any, site: tuple[ServerProcess, str]) -> None:
    username = f"writer{uuid.uuid4().hex[:6]}"
    page.goto(site[1] + "/buckets")
    page.get_by_role("link", name="Users").click()
    page.get_by_role("button", name="Create user").click()
    page.get_by_label("New username", exact=True).fill(username)
    page.get_by_label("New password", exact=True).fill("writer-password-1")
    page.get_by_label("Role", exact=True).select_option("Writer")
    page.get_by_role("button", name="Add user").click()
    page.get_by_role("cell", name=username, exact=True).wait_for()
    context, other, problems = open_page(browser)
    try:
        sign_in(other, site[1], username, "writer-password-1")
        assert other.get_by_role("link", name="Users").count() == 0
        other.get_by_role("link", name="Dashboard").click()
        other.get_by_text("Dedup savings").wait_for()
        check_page(other, problems)
    finally:
        context.close()


def test_console_dark_mode_on_a_narrow_screen(browser: Any, site: tuple[ServerProcess, str]) -> None:
    context, page, problems = open_page(browser, color_scheme="dark", viewport={"width": 360, "height": 740})
    try:
        sign_in(page, site[1])
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(13, 17, 23)", background
        fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert fits
        check_page(page, problems)
    finally:
        context.close()


def test_console_folder_of_1000_objects_renamed(page: Any, site: tuple[ServerProcess, str], s3: Any) -> None:
    name = _bucket(s3)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=name, Key=f"photos/{i:04d}.txt", Body=b"p"), range(1000)))
    page.goto(f"{site[1]}/buckets/{name}")
    page.get_by_role("button", name="Rename folder photos/").click()
    page.get_by_label("New name (full key)").fill("pictures/")
    page.get_by_role("button", name="Rename", exact=True).click()
    page.get_by_role("link", name="pictures/").wait_for()
    assert s3.list_objects_v2(Bucket=name, Prefix="pictures/")["KeyCount"] == 1000
    assert s3.list_objects_v2(Bucket=name, Prefix="photos/")["KeyCount"] == 0


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_console_pages_have_no_serious_accessibility_violations(browser: Any, site: tuple[ServerProcess, str],
                                                                s3: Any, scheme: str) -> None:
    name = _bucket(s3)
    s3.put_object(Bucket=name, Key="dir/file.txt", Body=b"f")
    s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [
        {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 3}}]})
    s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [
        {"AllowedMethods": ["GET"], "AllowedOrigins": ["https://a.example"]}]})  # rule rows on the settings page
    context, page, problems = open_page(browser, color_scheme=scheme)
    try:
        page.goto(site[1] + "/login")
        found = {"/login": axe_violations(page)}
        sign_in(page, site[1])
        for path in ("/buckets", f"/buckets/{name}", f"/buckets/{name}?prefix=dir/",
                     f"/buckets/{name}/object?key=dir/file.txt", f"/buckets/{name}/sql",
                     f"/buckets/{name}/settings", "/dashboard", "/users", "/audit"):
            page.goto(site[1] + path)
            if path == "/dashboard":  # the charts drawn
                page.locator('figure[data-chart="rate"]:not([data-points="0"])').wait_for()
            found[path] = axe_violations(page)
        assert not any(found.values()), {k: v for k, v in found.items() if v}
        check_page(page, problems)
    finally:
        context.close()


def test_console_sql_result_table(page: Any, site: tuple[ServerProcess, str], s3: Any) -> None:
    name = _bucket(s3)
    s3.put_object(Bucket=name, Key="logs/a.csv", Body=b"status,ms\nOK,10\nERROR,30\nOK,12\n")
    s3.put_object(Bucket=name, Key="logs/b.csv", Body=b"status,ms\nERROR,40\n")
    page.goto(f"{site[1]}/buckets/{name}")
    page.get_by_role("link", name="SQL").click()
    query = "SELECT status, COUNT(*) AS n FROM 'logs/*.csv' GROUP BY status ORDER BY status"
    page.get_by_label("SQL query").fill(query)
    page.get_by_role("button", name="Run query").click()
    table = page.get_by_role("table", name="Results")
    table.wait_for()
    assert table.locator("tbody tr").all_inner_texts() == ["ERROR\t2", "OK\t2"]
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    assert Path(download.value.path()).read_text().splitlines() == ["status,n", "ERROR,2", "OK,2"]


def test_console_folder_upload_and_drop(page: Any, site: tuple[ServerProcess, str], s3: Any,
                                        tmp_path: Path) -> None:
    name = _bucket(s3)
    folder = tmp_path / "album"
    (folder / "inner").mkdir(parents=True)
    (folder / "one.txt").write_bytes(b"one")
    (folder / "inner" / "two.txt").write_bytes(b"two")
    page.goto(f"{site[1]}/buckets/{name}?prefix=up/")
    page.get_by_label("Upload folder").set_input_files(str(folder))
    _until(page, lambda: page.get_by_text("done", exact=True).count() == 2, "the folder's two files")
    page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File(['dropped'], 'dropped.txt', {type: 'text/plain'}));
        document.querySelector('.drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: data,
                                                                                  bubbles: true, cancelable: true}));
    }""")
    _until(page, lambda: page.get_by_text("done", exact=True).count() == 3, "the dropped file")
    keys = {o["Key"]: s3.get_object(Bucket=name, Key=o["Key"])["Body"].read()
            for o in s3.list_objects_v2(Bucket=name)["Contents"]}
    assert keys == {"up/album/one.txt": b"one", "up/album/inner/two.txt": b"two", "up/dropped.txt": b"dropped"}


def test_console_dashboard_request_charts_render_and_change(page: Any, site: tuple[ServerProcess, str],
                                                            s3: Any) -> None:
    """The dashboard's charts (static/charts.js) draw the S3 API's own request metrics and move with traffic."""
    page.goto(f"{site[1]}/dashboard")
    rate = page.locator('figure[data-chart="rate"]')
    latency = page.locator('figure[data-chart="latency"]')
    _until(page, lambda: int(rate.get_attribute("data-points") or 0) >= 1, "the first chart point")
    assert rate.locator("svg polyline").count() == 1 and latency.locator("svg polyline").count() == 1
    before = float(page.locator("#request-charts").get_attribute("data-requests") or 0)
    name = _bucket(s3)
    for i in range(20):
        s3.put_object(Bucket=name, Key=f"k{i}", Body=b"x")
    _until(page, lambda: float(page.locator("#request-charts").get_attribute("data-requests") or 0) >= before + 21,
           "the 21 requests counted")
    _until(page, lambda: float(rate.get_attribute("data-latest") or 0) > 0, "a non-zero request rate drawn")
    assert float(latency.get_attribute("data-latest") or 0) >= 0
    assert len((rate.locator("svg polyline").get_attribute("points") or "").split()) >= 1
    assert re.fullmatch(r"\d+\.\d requests/s", rate.locator(".chart-latest").inner_text())


def test_console_s3_select_one_object_csv_and_json(page: Any, site: tuple[ServerProcess, str], s3: Any) -> None:
    """S3 Select over one object on the SQL page (SelectObjectContent through the console's S3 bridge): CSV and
    JSON input, a results table, a CSV download, and a bad expression said beside the form."""
    name = _bucket(s3)
    s3.put_object(Bucket=name, Key="data/people.csv", Body=b"name,age\nada,36\nbob,17\ncyd,52\n")
    s3.put_object(Bucket=name, Key="data/people.json", Body=b'{"name":"ada","age":36}\n{"name":"bob","age":17}\n')
    page.goto(f"{site[1]}/buckets/{name}/sql")
    page.get_by_label("Object key").fill("data/people.csv")
    page.get_by_label("Select expression").fill("SELECT s.name, s.age FROM s3object s WHERE CAST(s.age AS INT) > 20")
    page.get_by_role("button", name="Run select").click()
    table = page.get_by_role("table", name="Select results")
    table.wait_for()
    assert table.locator("tbody tr").all_inner_texts() == ["ada\t36", "cyd\t52"]
    with page.expect_download() as download:
        page.get_by_role("button", name="Download select CSV").click()
    assert Path(download.value.path()).read_text().splitlines() == ["ada,36", "cyd,52"]
    page.get_by_label("Object key").fill("data/people.json")
    page.get_by_label("Input format").select_option(label="JSON lines")
    page.get_by_label("Select expression").fill("SELECT s.name FROM s3object s WHERE s.age < 20")
    page.get_by_role("button", name="Run select").click()
    page.get_by_role("table", name="Select results").wait_for()
    assert page.get_by_role("table", name="Select results").locator("tbody tr").all_inner_texts() == ["bob"]
    page.get_by_label("Select expression").fill("SELEKT nothing")
    page.get_by_role("button", name="Run select").click()
    assert page.get_by_role("alert").inner_text().startswith("ParseUnexpectedToken: ")  # S3's code, as text


def test_console_lifecycle_and_cors_rules_edited_as_forms(page: Any, site: tuple[ServerProcess, str],
                                                          s3: Any) -> None:
    """Rules added with the settings page's forms are S3 documents boto3 reads back; a rule the form cannot show
    (an expose header) survives an edit; removing the last rule removes the document."""
    name = _bucket(s3)
    old = {"ID": "old", "AllowedMethods": ["GET"], "AllowedOrigins": ["https://old.example"], "ExposeHeaders": ["ETag"]}
    s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [old]})
    page.goto(f"{site[1]}/buckets/{name}/settings")
    page.get_by_label("Rule ID", exact=True).fill("logs")
    page.get_by_label("Key prefix").fill("logs/")
    page.get_by_label("Expire objects after (days)").fill("30")
    page.get_by_label("Expire noncurrent versions after (days)").fill("7")
    page.get_by_label("Abort incomplete multipart uploads after (days)").fill("2")
    page.get_by_role("button", name="Add lifecycle rule").click()
    page.get_by_role("table", name="Lifecycle rules").get_by_text("logs/").wait_for()
    assert s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"] == [{
        "ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 7},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}}]
    page.get_by_label("CORS rule ID").fill("app")
    page.get_by_label("Allowed origins (space or comma separated)").fill("https://a.example, https://b.example")
    page.get_by_label("GET").check()
    page.get_by_label("PUT").check()
    page.get_by_label("Allowed headers").fill("*")
    page.get_by_label("Max age (seconds)").fill("600")
    page.get_by_role("button", name="Add CORS rule").click()
    page.get_by_role("table", name="CORS rules").get_by_text("https://a.example https://b.example").wait_for()
    cors = s3.get_bucket_cors(Bucket=name)["CORSRules"]
    assert cors == [old, {"ID": "app", "AllowedHeaders": ["*"], "AllowedMethods": ["GET", "PUT"],
         "AllowedOrigins": ["https://a.example", "https://b.example"], "MaxAgeSeconds": 600}]
    page.get_by_role("button", name="Remove lifecycle rule logs").click()
    page.get_by_role("table", name="Lifecycle rules").get_by_text("No rules.").wait_for()
    with pytest.raises(Exception, match="NoSuchLifecycleConfiguration"):
        s3.get_bucket_lifecycle_configuration(Bucket=name)
    page.get_by_role("button", name="Remove cors rule old").click()
    page.get_by_role("table", name="CORS rules").get_by_text("https://old.example").wait_for(state="detached")
    assert [r["ID"] for r in s3.get_bucket_cors(Bucket=name)["CORSRules"]] == ["app"]
