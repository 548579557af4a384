"""boto3 S3 clients for a test server, signed with the test credentials the server helper starts it with."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from helpers.server import ACCESS_KEY, SECRET_KEY, track_client


def make_client(endpoint: str, region: str = "us-east-1", **config: Any) -> Any:
    """An S3 client for ``endpoint`` signing for ``region`` (the server's S4_REGION); ``config`` goes to botocore's
    ``Config`` (retries, addressing, ...). Its connections are closed when the server helper stops that endpoint's
    server."""
    return track_client(endpoint, boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=region,
                        config=Config(**config) if config else None))


def account_client(endpoint: str, access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Any:
    """An S3 client signing with another user's keys (default: the test root's), closed like ``make_client``'s."""
    return track_client(endpoint, boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                                               aws_secret_access_key=secret, region_name="us-east-1"))
