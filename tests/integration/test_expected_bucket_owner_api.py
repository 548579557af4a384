"""x-amz-expected-bucket-owner (issue 25): a request naming another account as the bucket's owner is 403
AccessDenied and changes nothing, signed or anonymous; the right owner (account id or canonical id) passes."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

DEFAULT_ACCOUNT = "000000000000"  # the legacy key pair's account (engine/accounts.py)


def refused(call: Any, **kwargs: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return exc.value.response["Error"]["Code"], exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_wrong_expected_bucket_owner_is_access_denied(server: Any, s3: Any, bucket: str) -> None:
    canonical = s3.list_buckets()["Owner"]["ID"]
    wrong = canonical + "foo"
    s3.put_object(Bucket=bucket, Key="foo", Body=b"bar")
    assert refused(s3.list_objects, Bucket=bucket, ExpectedBucketOwner=wrong) == ("AccessDenied", 403)
    assert refused(s3.put_object, Bucket=bucket, Key="bar", Body=b"x", ExpectedBucketOwner=wrong) == \
        ("AccessDenied", 403)
    assert refused(s3.delete_object, Bucket=bucket, Key="foo", ExpectedBucketOwner="111111111111") == \
        ("AccessDenied", 403)
    assert refused(s3.delete_objects, Bucket=bucket, Delete={"Objects": [{"Key": "foo"}]},
                   ExpectedBucketOwner=wrong) == ("AccessDenied", 403)
    anonymous = requests.get(f"{server.endpoint}/{bucket}", headers={"x-amz-expected-bucket-owner": wrong})
    assert anonymous.status_code == 403
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == ["foo"]  # nothing changed
    for owner in (canonical, DEFAULT_ACCOUNT):
        s3.put_object(Bucket=bucket, Key="bar", Body=b"x", ExpectedBucketOwner=owner)
        assert s3.list_objects(Bucket=bucket, ExpectedBucketOwner=owner)["Contents"]
    missing = f"{bucket}-gone"
    assert refused(s3.list_objects, Bucket=missing, ExpectedBucketOwner=wrong) == ("NoSuchBucket", 404)
