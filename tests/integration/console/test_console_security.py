"""The web console over plain HTTP: sessions, CSRF, escaping, roles, headers, and its port (api/console).

One server per module: IAM on, two HTTP worker processes (the console socket shared by both workers).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from helpers.admin_api import ROOT_PASSWORD
from helpers.console import Signed, console_server, self_signed_cert, sign_in
from helpers.s3client import make_client
from helpers.server import ServerProcess

XSS_KEY = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    server, url = console_server(tmp_path_factory.mktemp("console") / "data", workers=2)
    yield server, url
    server.stop()


@pytest.fixture(scope="module")
def root(site: tuple[ServerProcess, str]) -> Signed:
    return sign_in(site[1])


@pytest.fixture(scope="module")
def s3(site: tuple[ServerProcess, str]) -> Any:
    return make_client(site[0].endpoint)


def _bucket() -> str:
    return f"console-{uuid.uuid4().hex[:10]}"


def _exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except ClientError:
        return False


def test_console_state_change_without_csrf_token_refused(root: Signed, s3: Any) -> None:
    name = _bucket()
    bare = root.http.post(root.url + "/buckets", data={"name": name}, allow_redirects=False, timeout=60)
    wrong = root.http.post(root.url + "/buckets", data={"name": name, "csrf_token": "x" + root.csrf},
                           allow_redirects=False, timeout=60)
    assert (bare.status_code, wrong.status_code) == (403, 403)
    assert "CSRF" in bare.text
    assert not _exists(s3, name)
    upload = root.http.put(root.url + f"/api/buckets/{name}/object", params={"key": "k"}, data=b"x", timeout=60)
    assert upload.status_code == 403
    made = root.post("/buckets", {"name": name})  # the same request with the token is what works
    assert made.status_code == 303 and _exists(s3, name)
    deleting = root.http.post(root.url + f"/buckets/{name}/delete", data={}, allow_redirects=False, timeout=60)
    assert deleting.status_code == 403 and _exists(s3, name)


def test_console_sign_in_form_needs_its_token(site: tuple[ServerProcess, str]) -> None:
    """Login CSRF: a sign-in posted from elsewhere (no token from the form's own cookie) is refused."""
    done = requests.post(site[1] + "/login", data={"username": "root", "password": ROOT_PASSWORD},
                         allow_redirects=False, timeout=60)
    assert done.status_code == 403 and "s4console=" not in done.headers.get("Set-Cookie", "")


def test_console_key_with_markup_shown_as_text(root: Signed, s3: Any) -> None:
    name = _bucket()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key=XSS_KEY, Body=b"x")
    page = root.get(f"/buckets/{name}")
    assert page.status_code == 200
    assert XSS_KEY not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text


def test_console_cookie_flags(site: tuple[ServerProcess, str]) -> None:
    http = requests.Session()
    form = http.get(site[1] + "/login", timeout=60)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token
    done = http.post(site[1] + "/login", data={"csrf_token": token.group(1), "username": "root",
                                                "password": ROOT_PASSWORD}, allow_redirects=False, timeout=60)
    cookie = done.headers["Set-Cookie"]
    assert cookie.startswith("s4console=")
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in flags and flags["samesite"] == "SameSite=Strict" and flags["path"] == "Path=/"
    assert "secure" not in flags  # plain HTTP here; over TLS the cookie is Secure (app.set_session_cookie)
    page = http.get(site[1] + "/buckets", timeout=60).text
    assert cookie.split(";")[0].split("=", 1)[1] not in page  # the session itself is never in the page


def test_console_security_headers_on_every_response(site: tuple[ServerProcess, str], root: Signed) -> None:
    for response in (requests.get(site[1] + "/login", timeout=60), root.get("/buckets"), root.get("/dashboard"),
                     requests.get(site[1] + "/static/htmx.min.js", timeout=60), root.get("/no-such-page")):
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in root.get("/buckets").text  # no inline script (CSP would refuse it anyway)


def test_console_reader_refused_admin_pages(root: Signed, site: tuple[ServerProcess, str], s3: Any) -> None:
    username = f"reader{uuid.uuid4().hex[:6]}"
    made = root.post("/users", {"username": username, "password": "reader-password-1", "role": "Reader"})
    assert made.status_code == 303, made.text
    reader = sign_in(site[1], username, "reader-password-1")
    assert reader.get("/users").status_code == 403
    assert reader.post("/users", {"username": "x" + username, "password": "p" * 12, "role": "SuperUser"}) \
        .status_code == 403
    assert ">Users<" not in reader.get("/buckets").text  # no link to what it may not open
    name = _bucket()  # and the S3 permission check applies: a Reader creates nothing
    refused = reader.post("/buckets", {"name": name})
    assert refused.status_code == 403 and not _exists(s3, name)
    assert reader.get("/dashboard").status_code == 200


def test_console_sign_in_is_throttled(site: tuple[ServerProcess, str]) -> None:
    """The engine's login throttle applies to the console's sign-in (5 free failures, then 429)."""
    http = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get(site[1] + "/login", timeout=60).text)
    assert token
    statuses = []
    for _ in range(8):  # bounded
        done = http.post(site[1] + "/login", data={"csrf_token": token.group(1), "username": "nobody-here",
                                                    "password": "wrong"}, allow_redirects=False, timeout=60)
        statuses.append(done.status_code)
    assert statuses[0] == 401 and 429 in statuses, statuses


def test_console_upload_multipart_and_cancel(root: Signed, s3: Any) -> None:
    """The uploader's calls: parts then completion give the bytes back; an abort leaves no upload behind."""
    name = _bucket()
    s3.create_bucket(Bucket=name)
    headers = {"X-CSRF-Token": root.csrf}
    api = f"{root.url}/api/buckets/{name}/uploads"
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1000)]
    upload_id = root.http.post(api, params={"key": "big.bin"}, headers=headers, timeout=60).json()["upload_id"]
    sent = []
    for number, body in enumerate(parts, 1):
        answer = root.http.put(api + "/part", params={"key": "big.bin", "upload_id": upload_id, "part": number},
                               data=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        sent.append({"part": number, "etag": answer.json()["etag"]})
    done = root.http.post(api + "/complete", params={"key": "big.bin", "upload_id": upload_id},
                          json={"parts": sent}, headers=headers, timeout=60)
    assert done.status_code == 200, done.text
    got = root.get(f"/buckets/{name}/download", params={"key": "big.bin"})
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(b"".join(parts)).digest()
    assert got.headers["Content-Disposition"].startswith("attachment")
    assert got.headers["Content-Type"] == "application/octet-stream"
    cancelled = root.http.post(api, params={"key": "gone.bin"}, headers=headers, timeout=60).json()["upload_id"]
    root.http.put(api + "/part", params={"key": "gone.bin", "upload_id": cancelled, "part": 1}, data=b"y" * 1000,
                  headers=headers, timeout=60)
    assert root.http.delete(api, params={"key": "gone.bin", "upload_id": cancelled}, headers=headers,
                            timeout=60).status_code == 200
    assert s3.list_multipart_uploads(Bucket=name).get("Uploads", []) == []


def test_console_html_object_never_rendered(root: Signed, s3: Any) -> None:
    """A stored HTML page downloaded from the console's origin is an attachment of opaque type, never a page."""
    name = _bucket()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="page.html", Body=b"<script>alert(1)</script>", ContentType="text/html")
    got = root.get(f"/buckets/{name}/download", params={"key": "page.html"})
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.headers["Content-Disposition"].startswith("attachment")


def test_console_share_link_outlives_the_session(root: Signed, site: tuple[ServerProcess, str], s3: Any) -> None:
    name = _bucket()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="shared/file.txt", Body=b"shared bytes")
    key = root.post(f"/users/{_root_id(root)}/keys")  # share links are signed with the user's own S3 key
    assert key.status_code == 200
    shown = root.post(f"/buckets/{name}/share", {"key": "shared/file.txt", "expires_hours": "168"})
    assert shown.status_code == 200, shown.text
    url = re.search(r'value="([^"]+)"', shown.text)
    assert url
    link = url.group(1).replace("&amp;", "&")
    assert "X-Amz-Expires=604800" in link
    for bad in ("169", "0", "inf", "nan", "soon"):
        refused = root.post(f"/buckets/{name}/share", {"key": "shared/file.txt", "expires_hours": bad})
        assert refused.status_code == 400, (bad, refused.status_code)
    ended = sign_in(site[1])
    assert ended.post("/logout").status_code == 303
    assert ended.get("/buckets").status_code == 303  # the ended session opens nothing...
    assert requests.get(link, timeout=60).content == b"shared bytes"  # ...and the link still works


def _root_id(root: Signed) -> str:
    page = root.get("/users").text
    found = re.search(r'action="/users/([^/"]+)/keys"', page)
    assert found, page
    return found.group(1)


def test_console_busy_port_warns_and_s3_serves(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = ServerProcess(tmp_path / "data", env={"S4_CONSOLE_BIND": f"127.0.0.1:{port}",
                                                       "S4_WORKERS": "1"}).start()
        try:
            s3 = make_client(server.endpoint)
            s3.create_bucket(Bucket="still-serving")
            assert "web console not started: cannot listen on 127.0.0.1:" in server.log()
        finally:
            server.stop()


def test_console_cookie_secure_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    server, url = console_server(tmp_path / "data", iam=False, S4_TLS_CERT=str(cert), S4_TLS_KEY=str(key))
    try:
        https = url.replace("http://", "https://")
        http = requests.Session()
        form = http.get(https + "/login", timeout=60, verify=str(cert))
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token
        done = http.post(https + "/login", data={"csrf_token": token.group(1), "username": "test-access-key",
                                                  "password": "test-secret-key"}, allow_redirects=False, timeout=60,
                         verify=str(cert))
        assert done.status_code == 303, done.text
        flags = [part.strip().lower() for part in done.headers["Set-Cookie"].split(";")]
        assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
    finally:
        server.stop()


def test_console_new_folder_tags_and_version_history(root: Signed, s3: Any) -> None:
    name = _bucket()
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    assert root.post(f"/buckets/{name}/folder", {"prefix": "a/", "name": "b"}).status_code == 303
    assert s3.head_object(Bucket=name, Key="a/b/")["ContentLength"] == 0
    first = s3.put_object(Bucket=name, Key="doc.txt", Body=b"first")["VersionId"]
    s3.put_object(Bucket=name, Key="doc.txt", Body=b"second")
    assert root.post(f"/buckets/{name}/object/tags", {"key": "doc.txt", "tags": "team=ops\nstage = prod"}) \
        .status_code == 303
    assert {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=name, Key="doc.txt")["TagSet"]} == \
        {"team": "ops", "stage": "prod"}
    shown = root.get(f"/buckets/{name}/object", params={"key": "doc.txt"})
    assert shown.status_code == 200 and first in shown.text and "team=ops" in shown.text
    assert root.post(f"/buckets/{name}/object/metadata", {"key": "doc.txt", "content_type": "text/plain",
                                                          "metadata": "Owner=ops"}).status_code == 303
    head = s3.head_object(Bucket=name, Key="doc.txt")
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"owner": "ops"}
    old = root.get(f"/buckets/{name}/download", params={"key": "doc.txt", "version_id": first})
    assert old.content == b"first"
    assert root.post(f"/buckets/{name}/object/restore", {"key": "doc.txt", "version_id": first}).status_code == 303
    assert s3.get_object(Bucket=name, Key="doc.txt")["Body"].read() == b"first"
    assert root.post(f"/buckets/{name}/object/delete-version", {"key": "doc.txt", "version_id": first}) \
        .status_code == 303
    versions = s3.list_object_versions(Bucket=name, Prefix="doc.txt")["Versions"]
    assert first not in [v["VersionId"] for v in versions] and len(versions) == 3


def test_console_rename_refused_without_write_access(root: Signed, site: tuple[ServerProcess, str], s3: Any) -> None:
    """Rename goes through RenameObject's own checks: a Reader renames nothing."""
    name = _bucket()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="keep/me.txt", Body=b"k")
    username = f"reader{uuid.uuid4().hex[:6]}"
    assert root.post("/users", {"username": username, "password": "reader-password-1", "role": "Reader"}) \
        .status_code == 303
    reader = sign_in(site[1], username, "reader-password-1")
    refused = reader.post(f"/buckets/{name}/rename", {"source": "keep/", "target": "moved/"})
    assert refused.status_code == 403
    assert s3.list_objects_v2(Bucket=name, Prefix="keep/")["KeyCount"] == 1
    assert root.post(f"/buckets/{name}/rename", {"source": "keep/", "target": "moved"}).status_code == 303
    assert s3.get_object(Bucket=name, Key="moved/me.txt")["Body"].read() == b"k"


def test_console_sql_error_shown_and_rows_rendered(root: Signed, s3: Any) -> None:
    name = _bucket()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="t.csv", Body=b"a,b\n1,2\n")
    bad = root.post(f"/buckets/{name}/sql", {"sql": "SELEC nonsense", "format": "auto", "action": "run"})
    assert bad.status_code == 200 and 'role="alert"' in bad.text
    good = root.post(f"/buckets/{name}/sql", {"sql": "SELECT a, b FROM 't.csv'", "format": "csv", "action": "run"})
    assert "<td>1</td><td>2</td>" in good.text


def test_console_dashboard_runs_a_job_now(root: Signed, site: tuple[ServerProcess, str]) -> None:
    before = root.get("/dashboard").text
    assert "Run scrubber now" in before and "Dedup savings" in before
    ran = root.post("/jobs/scrubber/run")
    assert ran.status_code == 303 and "scrubber%20ran" in ran.headers["Location"]
    after = root.get("/dashboard").text
    row = after[after.index("<td>scrubber"):].split("</tr>")[0]
    assert "never" not in row  # its last run is shown
    username = f"writer{uuid.uuid4().hex[:6]}"
    root.post("/users", {"username": username, "password": "writer-password-1", "role": "Writer"})
    writer = sign_in(site[1], username, "writer-password-1")
    assert "Run scrubber now" not in writer.get("/dashboard").text
    assert writer.post("/jobs/scrubber/run").status_code == 403


LIFECYCLE = ("<LifecycleConfiguration><Rule><ID>expire-tmp</ID><Filter><Prefix>tmp/</Prefix></Filter>"
             "<Status>Enabled</Status><Expiration><Days>7</Days></Expiration></Rule></LifecycleConfiguration>")
CORS = ("<CORSConfiguration><CORSRule><AllowedOrigin>https://app.example</AllowedOrigin><AllowedMethod>GET"
        "</AllowedMethod></CORSRule></CORSConfiguration>")


def test_console_bucket_settings_lifecycle_cors_tags(root: Signed, s3: Any) -> None:
    name = _bucket()
    s3.create_bucket(Bucket=name)
    assert root.get(f"/buckets/{name}/settings").status_code == 200
    assert root.post(f"/buckets/{name}/settings/lifecycle", {"document": LIFECYCLE}).status_code == 303
    assert root.post(f"/buckets/{name}/settings/cors", {"document": CORS}).status_code == 303
    assert root.post(f"/buckets/{name}/settings/tags", {"tags": "owner=ops"}).status_code == 303
    rules = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    assert rules[0]["ID"] == "expire-tmp" and rules[0]["Expiration"]["Days"] == 7
    assert s3.get_bucket_cors(Bucket=name)["CORSRules"][0]["AllowedOrigins"] == ["https://app.example"]
    assert s3.get_bucket_tagging(Bucket=name)["TagSet"] == [{"Key": "owner", "Value": "ops"}]
    shown = root.get(f"/buckets/{name}/settings").text
    assert "expire-tmp" in shown and "https://app.example" in shown and "owner=ops" in shown
    bad = root.post(f"/buckets/{name}/settings/cors", {"document": "<CORSConfiguration><oops"})
    assert bad.status_code == 400 and "Malformed" in bad.text  # S3's own validation and error
    assert s3.get_bucket_cors(Bucket=name)["CORSRules"]  # unchanged
    assert root.post(f"/buckets/{name}/settings/lifecycle", {"document": ""}).status_code == 303
    with pytest.raises(ClientError):
        s3.get_bucket_lifecycle_configuration(Bucket=name)


def test_console_refuses_state_changes_from_another_origin(root: Signed, site: tuple[ServerProcess, str],
                                                           s3: Any) -> None:
    """A page served by the S3 port of the same host shares the host's cookies: its posts are refused by origin."""
    name = _bucket()
    s3_origin = site[0].endpoint  # http://127.0.0.1:<S3 port>
    refused = root.post("/buckets", {"name": name}, headers={"Origin": s3_origin})
    assert refused.status_code == 403 and not _exists(s3, name)
    own = root.post("/buckets", {"name": name}, headers={"Origin": root.url})
    assert own.status_code == 303 and _exists(s3, name)
    form = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.get(site[1] + "/login", timeout=60).text)
    assert token
    tossed = form.post(site[1] + "/login", data={"csrf_token": token.group(1), "username": "root",
                                                  "password": ROOT_PASSWORD}, headers={"Origin": s3_origin},
                       allow_redirects=False, timeout=60)
    assert tossed.status_code == 403 and "s4console=" not in tossed.headers.get("Set-Cookie", "")


def test_console_oversized_form_refused_unread(site: tuple[ServerProcess, str], root: Signed) -> None:
    big = {"name": "x" * (2 * 1024 * 1024)}
    anonymous = requests.post(site[1] + "/buckets", data=big, allow_redirects=False, timeout=60)
    assert anonymous.status_code == 413
    assert root.post("/buckets", big).status_code == 413
    assert root.get("/buckets").status_code == 200  # and the console still serves


def test_console_audit_page_filters_the_journal(root: Signed, site: tuple[ServerProcess, str], s3: Any) -> None:
    name = _bucket()
    assert root.post("/buckets", {"name": name}).status_code == 303  # journaled with actor user:root
    s3.put_object(Bucket=name, Key="audited.txt", Body=b"a")  # and with the S3 key as actor
    page = root.get("/audit", params={"bucket": name})
    assert page.status_code == 200
    rows = re.findall(r"<tr><td>(\d+)</td><td>[^<]*</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                      r"<td class=\"key\">([^<]*)</td>", page.text)
    assert {r[3] for r in rows} == {name} and len(rows) >= 2, page.text[-2000:]
    assert [int(r[0]) for r in rows] == sorted((int(r[0]) for r in rows), reverse=True)  # newest first
    assert any(r[1] == "user:root" for r in rows) and any(r[4] == "audited.txt" for r in rows)
    mine = root.get("/audit", params={"bucket": name, "user": "user:root"}).text
    assert "audited.txt" not in mine
    username = f"reader{uuid.uuid4().hex[:6]}"
    root.post("/users", {"username": username, "password": "reader-password-1", "role": "Reader"})
    assert sign_in(site[1], username, "reader-password-1").get("/audit").status_code == 403


def test_console_metrics_json_sums_every_worker(root: Signed, s3: Any, site: tuple[ServerProcess, str]) -> None:
    """The charts' totals are the S3 API's request series of every worker (the multi-process files), whichever
    worker answers; a session is needed."""
    assert requests.get(site[1] + "/api/metrics", allow_redirects=False, timeout=30).status_code == 303  # sign in
    before = root.get("/api/metrics").json()
    assert before["enabled"] is True
    name = _bucket()
    s3.create_bucket(Bucket=name)
    for i in range(30):  # a new client every third request: new connections, spread over both workers
        if i % 3 == 0:
            make_client(site[0].endpoint).head_bucket(Bucket=name)
        else:
            s3.put_object(Bucket=name, Key=f"k{i}", Body=b"x")
    for _ in range(4):  # any worker's answer has every worker's counts
        after = root.get("/api/metrics").json()
        assert after["requests"] >= before["requests"] + 31
        assert after["count"] >= before["count"] + 31 and after["sum"] > before["sum"]
        assert after["buckets"]["+Inf"] == after["count"]
