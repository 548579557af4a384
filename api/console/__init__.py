"""The web console: server-rendered pages (jinja2 + htmx) on their own port, acting through the S3 API's code
(docs/architecture/console.md)."""

from .app import ConsoleSettings, build_console_app

__all__ = ["ConsoleSettings", "build_console_app"]
