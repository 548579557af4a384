"""Notification targets the operator defines (S4_NOTIFY_WEBHOOK_ENDPOINT_<ID>, ``[notify.webhook.<ID>]``).

A bucket's configuration names a target by ARN ``arn:s4:sqs::<ID>:webhook``; Topic and Lambda shapes may name the
same ARN (``arn:s4:sns::<ID>:webhook`` and ``arn:s4:lambda::<ID>:webhook`` are accepted too: one target, whatever
shape the client library prefers). An ARN naming no defined target is refused with InvalidArgument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ARN_RE = re.compile(r"^arn:s4:(sqs|sns|lambda)::([A-Za-z0-9_-]{1,64}):webhook$")


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One webhook: where messages are POSTed and the bearer token sent with them ("" = none)."""

    id: str
    endpoint: str
    auth_token: str = ""

    @property
    def arn(self) -> str:
        return arn_of(self.id)


def arn_of(target_id: str) -> str:
    return f"arn:s4:sqs::{target_id}:webhook"


def target_of(arn: str) -> str | None:
    """The target id an ARN names, or None if it is not an S4 webhook ARN."""
    m = _ARN_RE.match(arn.strip())
    return None if m is None else m.group(2)
