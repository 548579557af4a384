"""Object ACLs in a pool's read merge (issue 21): PutObjectAcl rides the version's tags_set clock, so a replica
answering with an older version record and another holding the newer tags_set (with ``acl``) merge to the ACL."""

from __future__ import annotations

from typing import Any

from s4.cluster.key_merge import merge_key_states

ACL = ["a" * 64, [["a" * 64, "FULL_CONTROL"], ["http://acs.amazonaws.com/groups/global/AllUsers", "READ"]]]


def state(version: dict[str, Any], clocks: dict[str, Any]) -> dict[str, Any]:
    return {"k": "k", "i": [1, "n1"], "bt": None, "vs": [version], "vt": {}, "tc": clocks}


def test_a_newer_acl_set_reaches_the_merged_version() -> None:
    version = {"v": "null", "h": 5, "o": "n1", "t": 0, "s": 1, "e": "x", "ct": "a/b", "b": []}
    clock = {"h": 9, "o": "n2", "tg": {}, "acl": ACL, "k": "k"}
    merged = merge_key_states({"n1": state(version, {}), "n2": state(version, {"null": clock})}).state
    assert merged["vs"][0]["acl"] == ACL
    cleared = {"h": 12, "o": "n1", "tg": {"t": "1"}, "acl": None, "k": "k"}  # PutObjectAcl private: no ACL
    merged = merge_key_states({"n1": state(dict(version, acl=ACL), {"null": cleared}),
                               "n2": state(version, {"null": clock})}).state
    assert "acl" not in merged["vs"][0] and merged["vs"][0]["tg"] == {"t": "1"}
    untouched = {"h": 13, "o": "n1", "tg": {"t": "2"}, "k": "k"}  # a tags_set from before ACLs: keeps the ACL
    merged = merge_key_states({"n1": state(dict(version, acl=ACL), {"null": untouched})}).state
    assert merged["vs"][0]["acl"] == ACL
