"""Bucket notifications: rule matching (prefix/suffix, event patterns) and the AWS message built from an event."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s4.engine.notify.messages import change_of, message, sequencer
from s4.engine.notify.rules import EVENT_NAMES, Rule, from_record, matching, to_record
from s4.engine.notify.targets import arn_of, target_of
from s4.journal import Event, EventType

keys = st.text(alphabet="ab/.é +", max_size=8)


def rule(events: tuple[str, ...] = ("s3:ObjectCreated:*",), prefix: str = "", suffix: str = "",
         target: str = "t1") -> Rule:
    return Rule("r1", "Queue", arn_of(target), target, events, prefix, suffix)


@given(keys, keys, keys)
def test_a_key_matches_exactly_when_it_has_the_prefix_and_the_suffix(key: str, prefix: str, suffix: str) -> None:
    r = rule(prefix=prefix, suffix=suffix)
    assert r.matches("ObjectCreated:Put", key) == (key.startswith(prefix) and key.endswith(suffix))


@given(st.sampled_from(sorted(EVENT_NAMES)), st.sampled_from(sorted(EVENT_NAMES)))
def test_an_event_pattern_selects_its_name_and_a_wildcard_its_whole_kind(named: str, other: str) -> None:
    exact = rule(events=(f"s3:{named}",))
    kind = rule(events=(f"s3:{named.split(':')[0]}:*",))
    assert exact.selects(other) == (other == named)
    assert kind.selects(other) == (other.split(":")[0] == named.split(":")[0])


def test_matching_keeps_only_the_rules_of_the_target() -> None:
    rules = [rule(target="t1"), rule(target="t2"), rule(target="t1", prefix="x/")]
    assert matching(rules, "t1", "ObjectCreated:Put", "a") == [rules[0]]
    assert matching(rules, "t1", "ObjectCreated:Put", "x/a") == [rules[0], rules[2]]
    assert matching(rules, "t2", "ObjectRemoved:Delete", "a") == []


def test_a_rule_round_trips_through_its_stored_record() -> None:
    rules = [rule(prefix="p/", suffix=".jpg"), Rule("r2", "Topic", "arn:s4:sns::t2:webhook", "t2",
                                                    ("s3:ObjectRemoved:*",))]
    assert from_record(to_record(rules)) == rules
    assert from_record(None) == []


def test_arns_name_a_target_in_every_shape_and_nothing_else() -> None:
    assert target_of("arn:s4:sqs::hook-1:webhook") == "hook-1"
    assert target_of("arn:s4:sns::hook-1:webhook") == "hook-1"
    assert target_of("arn:s4:lambda::hook-1:webhook") == "hook-1"
    assert target_of("arn:aws:sqs:us-east-1:123456789012:queue") is None
    assert target_of("arn:s4:sqs::hook 1:webhook") is None


def ev(type_: EventType, payload: dict, hlc: int = (1_700_000_000_123 << 16) | 7) -> Event:
    return Event(seq=5, hlc=hlc, origin="n1", type=type_, payload=payload, actor="user:alice")


def test_the_message_has_the_aws_event_structure() -> None:
    event = ev(EventType.OBJECT_VERSION_PUT, {"bucket": "b", "key": "red flower/(1).jpg",
                                             "version": {"v": "null", "s": 12, "e": "abc"}})
    change = change_of(event)
    assert change is not None and change.name == "ObjectCreated:Put"
    doc = message(event, change, rule(), "us-east-1")
    (rec,) = doc["Records"]
    assert rec["eventVersion"] == "2.1" and rec["eventSource"] == "aws:s3" and rec["awsRegion"] == "us-east-1"
    assert rec["eventTime"] == "2023-11-14T22:13:20.123Z"
    assert rec["eventName"] == "ObjectCreated:Put"
    assert rec["userIdentity"] == {"principalId": "user:alice"}
    assert rec["s3"]["configurationId"] == "r1"
    assert rec["s3"]["bucket"]["name"] == "b" and rec["s3"]["bucket"]["arn"] == "arn:aws:s3:::b"
    assert rec["s3"]["object"] == {"key": "red+flower/%281%29.jpg", "size": 12, "eTag": "abc",
                                   "sequencer": sequencer(event.hlc)}  # no versionId for the null version


def test_each_change_gets_its_aws_event_name() -> None:
    def name(type_: EventType, payload: dict) -> str | None:
        change = change_of(ev(type_, {"bucket": "b", "key": "k", **payload}))
        return None if change is None else change.name

    version = {"version": {"v": "v1", "s": 1, "e": "e"}}
    assert name(EventType.OBJECT_VERSION_PUT, version) == "ObjectCreated:Put"
    assert name(EventType.OBJECT_VERSION_PUT, {**version, "s3op": "CopyObject"}) == "ObjectCreated:Copy"
    assert name(EventType.OBJECT_VERSION_PUT, {**version, "s3op": "PostObject"}) == "ObjectCreated:Post"
    assert name(EventType.MULTIPART_COMPLETED, version) == "ObjectCreated:CompleteMultipartUpload"
    assert name(EventType.OBJECT_VERSION_REMOVED, {"version_id": "v1"}) == "ObjectRemoved:Delete"
    assert name(EventType.DELETE_MARKER_PUT, {"version_id": "v2"}) == "ObjectRemoved:DeleteMarkerCreated"
    assert name(EventType.OBJECT_TAGS_SET, {"version_id": "v1", "tags": {"a": "1"}}) == "ObjectTagging:Put"
    assert name(EventType.OBJECT_TAGS_SET, {"version_id": "v1", "tags": {}}) == "ObjectTagging:Delete"
    assert name(EventType.OBJECT_TAGS_SET, {"version_id": "v1", "tags": {}, "s3op": "PutObjectAcl"}) is None
    assert name(EventType.PREFIX_RENAMED, {"src": "a/", "dst": "b/"}) == "ObjectRenamed:Rename"
    assert name(EventType.BUCKET_CONFIG_SET, {"kind": "cors", "value": None}) is None
    assert name(EventType.MULTIPART_CREATED, {"upload": {}}) is None


@given(st.integers(0, 2**63), st.integers(0, 2**63))
def test_the_sequencer_orders_as_the_hlc(a: int, b: int) -> None:
    assert (sequencer(a) < sequencer(b)) == (a < b)
