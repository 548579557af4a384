"""S3 action names a bucket policy may name (``s3:`` + one of these), and action/ARN wildcard matching.

The list is AWS's S3 actions that apply to buckets and objects (the service authorization reference); a policy
naming another action without a wildcard is refused as AWS refuses it ("Policy has invalid action").
"""

from __future__ import annotations

import re

S3_ACTIONS = frozenset(name.lower() for name in """
    AbortMultipartUpload BypassGovernanceRetention CreateBucket DeleteBucket DeleteBucketOwnershipControls
    DeleteBucketPolicy DeleteBucketWebsite DeleteObject DeleteObjectTagging DeleteObjectVersion
    DeleteObjectVersionTagging GetAccelerateConfiguration GetAnalyticsConfiguration GetBucketAcl GetBucketCORS
    GetBucketLocation GetBucketLogging GetBucketNotification GetBucketObjectLockConfiguration
    GetBucketOwnershipControls GetBucketPolicy GetBucketPolicyStatus GetBucketPublicAccessBlock
    GetBucketRequestPayment GetBucketTagging GetBucketVersioning GetBucketWebsite GetEncryptionConfiguration
    GetIntelligentTieringConfiguration GetInventoryConfiguration GetLifecycleConfiguration
    GetMetricsConfiguration GetObject GetObjectAcl GetObjectAttributes GetObjectLegalHold GetObjectRetention
    GetObjectTagging GetObjectTorrent GetObjectVersion GetObjectVersionAcl GetObjectVersionAttributes
    GetObjectVersionForReplication GetObjectVersionTagging GetObjectVersionTorrent GetReplicationConfiguration
    ListAllMyBuckets ListBucket ListBucketMultipartUploads ListBucketVersions ListMultipartUploadParts
    ObjectOwnerOverrideToBucketOwner PutAccelerateConfiguration PutAnalyticsConfiguration PutBucketAcl
    PutBucketCORS PutBucketLogging PutBucketNotification PutBucketObjectLockConfiguration
    PutBucketOwnershipControls PutBucketPolicy PutBucketPublicAccessBlock PutBucketRequestPayment
    PutBucketTagging PutBucketVersioning PutBucketWebsite PutEncryptionConfiguration
    PutIntelligentTieringConfiguration PutInventoryConfiguration PutLifecycleConfiguration
    PutMetricsConfiguration PutObject PutObjectAcl PutObjectLegalHold PutObjectRetention PutObjectTagging
    PutObjectVersionAcl PutObjectVersionTagging PutReplicationConfiguration ReplicateDelete ReplicateObject
    ReplicateTags RestoreObject RenameObject
""".split())
ACTION_RE = re.compile(r"^s3:[A-Za-z0-9*?]+$", re.IGNORECASE)


def valid_action(action: str) -> bool:
    """``*``, or ``s3:`` + a known action, or ``s3:`` + a wildcard pattern."""
    if action == "*":
        return True
    if not ACTION_RE.match(action):
        return False
    name = action[3:].lower()
    return "*" in name or "?" in name or name in S3_ACTIONS


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """``*`` any run of characters, ``?`` exactly one; everything else literal (IAM's StringLike / ARN rules).

    The greedy two-pointer match (back to the last ``*`` on a mismatch): O(len(pattern) * len(value)) at worst,
    where a regex of many ``*`` backtracks exponentially; a policy is written by a bucket's users, and a pattern
    like ``*a*a*a*a*a*b`` must not let one of them burn a worker's CPU on every request to the bucket."""
    if pattern == "*":
        return True
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if "*" not in pattern and "?" not in pattern:
        return pattern == value
    p = v = 0
    star, resume = -1, 0
    while v < len(value):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == value[v]):
            p += 1
            v += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, resume = p, v
            p += 1
        elif star >= 0:
            resume += 1
            p, v = star + 1, resume
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def action_matches(pattern: str, action: str) -> bool:
    """Action names compare case-insensitively (``s3:getobject`` is ``s3:GetObject``)."""
    return wildcard_match(pattern, action, ignore_case=True)
