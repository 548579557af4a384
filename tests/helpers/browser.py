"""Playwright (Python) driving Debian's chromium against a real s4-server's console.

One browser per test module (``browser`` fixture); each test gets a fresh context and page (``page``) that fails
the test on any page error, console error or CSP violation. The browser is the system's chromium, found on PATH
(``apt-get install chromium``, .ci/run); ``playwright install`` is never run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Records every CSP violation where the test can read it (an init script runs before the page's own scripts and,
#: injected by the browser itself, is not subject to the page's CSP).
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


class PageProblems:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.dialogs: list[str] = []

    def console(self, message: Any) -> None:
        if message.type == "error":
            self.seen.append(f"console error: {message.text}")

    def dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()


def open_page(browser: Any, **context_options: Any) -> tuple[Any, Any, PageProblems]:
    context = browser.new_context(**context_options)
    context.add_init_script(CSP_RECORDER)
    page = context.new_page()
    problems = PageProblems()
    page.on("pageerror", lambda exc: problems.seen.append(f"page error: {exc}"))
    page.on("console", problems.console)
    page.on("dialog", problems.dialog)
    page.set_default_timeout(30_000)
    return context, page, problems


def check_page(page: Any, problems: PageProblems) -> None:
    """Fail on whatever the page reported: errors, console errors, CSP violations."""
    violations = [] if page.is_closed() else page.evaluate("window.__cspViolations || []")
    assert not problems.seen and not violations, problems.seen + [f"CSP violation: {v}" for v in violations]


@pytest.fixture
def page_and_problems(browser: Any) -> Iterator[tuple[Any, PageProblems]]:
    context, page, problems = open_page(browser)
    try:
        yield page, problems
        check_page(page, problems)
    finally:
        context.close()


AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


def axe_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is. axe is evaluated through the browser's
    debugging protocol (not a <script> of the page), so the page's CSP stays as strict as it serves it."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    found = page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ['violations']});
        return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                            nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}));
    }""")
    return [f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes']}" for v in found if v["impact"] in SERIOUS]
