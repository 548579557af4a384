"""PutBucketNotificationConfiguration documents: the AWS shapes boto3 sends, S4 targets, and the exact errors."""

from __future__ import annotations

import pytest
from botocore import session as botocore_session
from botocore.serialize import create_serializer

from s4.api.s3.notification import notification_xml, parse_notification
from s4.engine.errors import ErrorCode, S3Error

TARGETS = frozenset({"hook", "other"})


def botocore_body(config: dict) -> bytes:
    """The body boto3 sends for ``put_bucket_notification_configuration`` (its own serializer: the real shape)."""
    model = botocore_session.get_session().get_service_model("s3")
    op = model.operation_model("PutBucketNotificationConfiguration")
    request = create_serializer("rest-xml").serialize_to_request(
        {"Bucket": "b", "NotificationConfiguration": config}, op)
    return request["body"]


def test_queue_topic_and_lambda_shapes_naming_s4_targets_are_accepted() -> None:
    rules = parse_notification(botocore_body({
        "QueueConfigurations": [{"Id": "q", "QueueArn": "arn:s4:sqs::hook:webhook", "Events": ["s3:ObjectCreated:*"],
                                 "Filter": {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "in/"},
                                                                    {"Name": "suffix", "Value": ".csv"}]}}}],
        "TopicConfigurations": [{"Id": "t", "TopicArn": "arn:s4:sns::other:webhook",
                                 "Events": ["s3:ObjectRemoved:Delete", "s3:ObjectRenamed:*"]}],
        "LambdaFunctionConfigurations": [{"LambdaFunctionArn": "arn:s4:lambda::hook:webhook",
                                          "Events": ["s3:ObjectTagging:Put"]}],
        "EventBridgeConfiguration": {},
    }), TARGETS)
    assert [(r.id, r.shape, r.target, r.events, r.prefix, r.suffix) for r in rules[:2]] == [
        ("q", "Queue", "hook", ("s3:ObjectCreated:*",), "in/", ".csv"),
        ("t", "Topic", "other", ("s3:ObjectRemoved:Delete", "s3:ObjectRenamed:*"), "", "")]
    assert rules[2].shape == "CloudFunction" and rules[2].target == "hook" and len(rules[2].id) == 32
    assert parse_notification(notification_xml(rules), TARGETS) == rules  # Get renders what Put parses


def test_an_empty_configuration_has_no_rules() -> None:
    assert parse_notification(botocore_body({}), TARGETS) == []
    assert notification_xml([]).endswith(b'<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                                         b"</NotificationConfiguration>")


def code(body: bytes) -> tuple[ErrorCode, str]:
    with pytest.raises(S3Error) as exc:
        parse_notification(body, TARGETS)
    return exc.value.code, exc.value.message


@pytest.mark.parametrize(("config", "message"), [
    ({"QueueConfigurations": [{"QueueArn": "arn:s4:sqs::nobody:webhook", "Events": ["s3:ObjectCreated:*"]}]},
     "Unable to validate the following destination configurations"),
    ({"QueueConfigurations": [{"QueueArn": "arn:aws:sqs:us-east-1:123456789012:q", "Events": ["s3:ObjectCreated:*"]}]},
     "Unable to validate the following destination configurations"),
    ({"QueueConfigurations": [{"QueueArn": "arn:s4:sqs::hook:webhook", "Events": ["s3:ObjectRestore:*"]}]},
     "The event is not supported for notifications"),
    ({"QueueConfigurations": [{"QueueArn": "arn:s4:sqs::hook:webhook", "Events": ["s3:ObjectCreated:*"],
                               "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "a"},
                                                                  {"Name": "prefix", "Value": "b"}]}}}]},
     "Cannot specify more than one prefix rule in a filter."),
    ({"QueueConfigurations": [{"QueueArn": "arn:s4:sqs::hook:webhook", "Events": ["s3:ObjectCreated:*"],
                               "Filter": {"Key": {"FilterRules": [{"Name": "middle", "Value": "a"}]}}}]},
     "filter rule name must be either prefix or suffix"),
    ({"QueueConfigurations": [{"Id": "x", "QueueArn": "arn:s4:sqs::hook:webhook", "Events": ["s3:ObjectCreated:*"]},
                              {"Id": "x", "QueueArn": "arn:s4:sqs::hook:webhook", "Events": ["s3:ObjectRemoved:*"]}]},
     "Configurations must have unique IDs."),
])
def test_bad_destinations_events_and_filters_are_invalid_argument(config: dict, message: str) -> None:
    assert code(botocore_body(config)) == (ErrorCode.INVALID_ARGUMENT, message)


@pytest.mark.parametrize("body", [
    b"<NotificationConfiguration><QueueConfiguration>",
    b"<NotificationConfigurationX/>",
    b"<NotificationConfiguration><Unknown/></NotificationConfiguration>",
    b"<NotificationConfiguration><QueueConfiguration><Event>s3:ObjectCreated:*</Event></QueueConfiguration>"
    b"</NotificationConfiguration>",  # no Queue ARN
    b"<NotificationConfiguration><QueueConfiguration><Queue>arn:s4:sqs::hook:webhook</Queue></QueueConfiguration>"
    b"</NotificationConfiguration>",  # no Event
    b"",
])
def test_malformed_documents_are_malformed_xml(body: bytes) -> None:
    assert code(body)[0] is ErrorCode.MALFORMED_XML
