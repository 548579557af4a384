"""Users and keys (SuperUser only, IAM on): the engine's IAM commands with the admin API's rules (a SuperUser of
another account sees and manages its own account's users; nobody deactivates, demotes or deletes themself)."""

from __future__ import annotations

import re
from typing import Any

from s4.engine import accounts
from s4.engine.iam import IamError

from ..admin.users import user_json
from .app import Page, Route

ROLES = ("Reader", "Writer", "SuperUser")


def routes() -> list[Route]:
    u = r"(?P<user>[^/]+)"
    return [
        ("GET", re.compile(r"/users"), users_page, "super"),
        ("POST", re.compile(r"/users"), create_user, "super"),
        ("POST", re.compile(rf"/users/{u}/active"), set_active, "super"),
        ("POST", re.compile(rf"/users/{u}/role"), set_role, "super"),
        ("POST", re.compile(rf"/users/{u}/password"), reset_password, "super"),
        ("POST", re.compile(rf"/users/{u}/keys"), create_key, "super"),
        ("POST", re.compile(rf"/users/{u}/keys/delete"), delete_key, "super"),
    ]


def _require_iam(page: Page) -> None:
    if not page.console.settings.iam_enabled:
        raise IamError(404, "IAM is off (S4_ROOT_PASSWORD unset): the S3 key pair is the only identity")


def _visible(page: Page, rec: dict[str, Any]) -> bool:
    mine = accounts.of_user(page.user.record) if page.user.record is not None else accounts.DEFAULT_ACCOUNT
    return mine.id == accounts.DEFAULT_ACCOUNT.id or accounts.of_user(rec).id == mine.id


def _target(page: Page) -> dict[str, Any]:
    _require_iam(page)
    rec = page.console.engine.get_user(page.params["user"])
    if not _visible(page, rec):
        raise IamError(404, "user not found")
    return rec


def _not_self(page: Page, rec: dict[str, Any], what: str) -> None:
    if rec["id"] == page.user.subject:
        raise IamError(400, f"you cannot {what} yourself")


async def users_page(page: Page, secret: tuple[str, str, str] | None = None) -> None:
    _require_iam(page)
    rows = [user_json(u) for u in page.console.engine.list_users() if _visible(page, u)]
    page.render("users.html", users=rows, roles=ROLES, secret=secret)


async def create_user(page: Page) -> None:
    _require_iam(page)
    role = page.arg("role")
    if role not in ROLES:
        raise IamError(400, f"role is one of {', '.join(ROLES)}")
    account = accounts.of_user(page.user.record) if page.user.record is not None else accounts.DEFAULT_ACCOUNT
    await page.console.engine.create_user(page.arg("username").strip(), page.arg("password"), role,
                                          actor=page.user.actor, account=account.name)
    page.redirect("/users")


async def set_active(page: Page) -> None:
    rec = _target(page)
    active = page.arg("active") == "true"
    if not active:
        _not_self(page, rec, "deactivate")
    await page.console.engine.update_user(rec["id"], is_active=active, actor=page.user.actor)
    page.redirect("/users")


async def set_role(page: Page) -> None:
    rec = _target(page)
    role = page.arg("role")
    if role not in ROLES:
        raise IamError(400, f"role is one of {', '.join(ROLES)}")
    if role != "SuperUser":
        _not_self(page, rec, "demote")
    await page.console.engine.update_user(rec["id"], role=role, actor=page.user.actor)
    page.redirect("/users")


async def reset_password(page: Page) -> None:
    rec = _target(page)
    await page.console.engine.update_user(rec["id"], password=page.arg("password"), actor=page.user.actor)
    page.redirect("/users")


async def create_key(page: Page) -> None:
    rec = _target(page)
    access_key, secret = await page.console.engine.create_credential(rec["id"], actor=page.user.actor)
    await users_page(page, (str(rec["username"]), access_key, secret))  # the secret is shown this once


async def delete_key(page: Page) -> None:
    rec = _target(page)
    await page.console.engine.delete_credential(rec["id"], actor=page.user.actor)
    page.redirect("/users")
