"""The settings page's rule editors (api/console/rules.py): form input checked before anything is read or written,
rules the form cannot show kept, a removal refused when the rules changed under the page."""

from __future__ import annotations

import pytest

from s4.api.console import rules
from s4.engine.iam import IamError

NS_DOC = ('<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule><ID>t</ID><Filter><Tag>'
          '<Key>k</Key><Value>v</Value></Tag></Filter><Status>Disabled</Status><Expiration><Days>3</Days></Expiration>'
          '</Rule></LifecycleConfiguration>')


@pytest.mark.parametrize("days", ["0", "-1", "1.5", "abc", "100001", "1e3"])
def test_console_lifecycle_rule_days_refused(days: str) -> None:
    with pytest.raises(IamError) as caught:
        rules.lifecycle_rule("x", "", days, "", "")
    assert caught.value.status == 400


def test_console_lifecycle_rule_needs_an_action() -> None:
    with pytest.raises(IamError):
        rules.lifecycle_rule("x", "logs/", "", "", "")


def test_console_cors_rule_needs_origin_and_method() -> None:
    with pytest.raises(IamError):
        rules.cors_rule("x", "", ["GET"], "", "")
    with pytest.raises(IamError):
        rules.cors_rule("x", "https://a", ["TRACE"], "", "")


def test_console_rule_added_keeps_what_the_form_cannot_show() -> None:
    root = rules.parse("lifecycle", NS_DOC)
    root.append(rules.lifecycle_rule("new", "p/", "", "", "1"))
    out = rules.serialize(root).decode()
    assert "<Tag><Key>k</Key><Value>v</Value></Tag>" in out and "<Status>Disabled</Status>" in out
    assert "ns0:" not in out and [v.ident for v in rules.views("lifecycle", root)] == ["t", "new"]


def test_console_rule_removal_refused_when_rules_changed() -> None:
    root = rules.parse("lifecycle", NS_DOC)
    with pytest.raises(IamError) as caught:
        rules.remove("lifecycle", root, 0, "other")
    assert caught.value.status == 409 and len(rules.rules_of("lifecycle", root)) == 1
    rules.remove("lifecycle", root, 0, "t")
    assert rules.rules_of("lifecycle", root) == []
