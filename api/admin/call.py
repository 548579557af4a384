"""One admin request as its handler sees it; the handler modules and the router both import it from here, so the
router can import its handlers at the top (no import cycle)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import falcon.asgi

from s4.engine import Engine
from s4.engine.iam import IamError

from ..settings import ApiSettings
from .tokens import TokenIssuer

if TYPE_CHECKING:
    from ..s3.access import AccessControl

MAX_JSON_BYTES = 64 * 1024
Result = tuple[int, Any]


@dataclass(frozen=True, slots=True)
class Streamed:
    """A body sent as it is produced (the event stream's NDJSON), instead of one JSON document."""

    content_type: str
    chunks: AsyncIterator[bytes]


class AdminContext(Protocol):
    """What handlers may use of the admin API (``router.AdminApi`` provides it)."""

    engine: Engine
    settings: ApiSettings
    started: float
    tokens: TokenIssuer
    access: AccessControl | None  # bucket policies of the console's bucket actions (s3/access.py)


@dataclass
class AdminCall:
    """One admin request: what handlers need, and the authenticated user (None for open endpoints)."""

    api: AdminContext
    req: falcon.asgi.Request
    params: dict[str, str]
    user: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        return self.api.engine

    @property
    def actor(self) -> str:
        return f"user:{self.user['username']}" if self.user else ""

    async def json(self) -> dict[str, Any]:
        raw = b""
        async for piece in self.req.stream:
            raw += piece
            if len(raw) > MAX_JSON_BYTES:
                raise IamError(400, "request body too large")
        try:
            doc = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise IamError(400, "request body is not valid JSON") from exc
        if not isinstance(doc, dict):
            raise IamError(400, "request body must be a JSON object")
        return doc
