"""The web console's tests: the browser fixtures (helpers/browser.py) for every module here."""

from helpers.browser import browser, page_and_problems  # noqa: F401 - fixtures, found by name

__all__ = ["browser", "page_and_problems"]
