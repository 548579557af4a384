"""Bucket policies: the document (parse and validate), the condition operators, and the one evaluator that every
authorization point calls (docs/architecture/access-control.md). Pure logic: no HTTP, no views, no clock."""

from .document import Policy, Statement, parse_policy
from .evaluate import Decision, decide, is_public
from .principals import DEFAULT_ACCOUNT_ID, Principal, anonymous, root_principal, user_principal

__all__ = ["DEFAULT_ACCOUNT_ID", "Decision", "Policy", "Principal", "Statement", "anonymous", "decide",
           "is_public", "parse_policy", "root_principal", "user_principal"]
