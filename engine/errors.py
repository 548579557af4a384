"""The one client-facing error family: ``S3Error(ErrorCode.X)``.

    S3Error -- carries an ErrorCode (AWS code, HTTP status, default message) plus optional message,
               resource, extra XML fields and extra response headers.

The engine detects S3 conditions itself (NoSuchKey, BucketNotEmpty, InvalidPart...) and raises them directly;
the HTTP layer (s4.api.errors) only renders them. Anything else reaching the HTTP layer is an InternalError.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class ErrorCode(enum.Enum):
    """Every S3 error S4 can return: (AWS code, HTTP status, default message)."""

    ACCESS_DENIED = ("AccessDenied", 403, "Access Denied")
    ACCOUNT_PROBLEM = ("AccountProblem", 403, "There is a problem with your AWS account.")
    AUTHORIZATION_HEADER_MALFORMED = (
        "AuthorizationHeaderMalformed", 400, "The authorization header that you provided is not valid.")
    AUTHORIZATION_QUERY_PARAMETERS_ERROR = (
        "AuthorizationQueryParametersError", 400, "Error parsing the X-Amz-Credential parameter.")
    BAD_DIGEST = ("BadDigest", 400, "The Content-MD5 or checksum value that you specified did not match what "
                  "the server received.")
    BUCKET_ALREADY_EXISTS = ("BucketAlreadyExists", 409, "The requested bucket name is not available.")
    BUCKET_ALREADY_OWNED_BY_YOU = (
        "BucketAlreadyOwnedByYou", 409,
        "Your previous request to create the named bucket succeeded and you already own it.")
    BUCKET_NOT_EMPTY = ("BucketNotEmpty", 409, "The bucket you tried to delete is not empty.")
    ENTITY_TOO_LARGE = ("EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size.")
    ENTITY_TOO_SMALL = ("EntityTooSmall", 400,
                        "Your proposed upload is smaller than the minimum allowed object size.")
    DESTINATION_EXISTS = ("DestinationAlreadyExists", 409, "The rename destination already exists.")
    IDEMPOTENCY_PARAMETER_MISMATCH = ("IdempotencyParameterMismatch", 400, "The client token was already used "
                                      "with different request parameters.")
    EXPIRED_TOKEN = ("ExpiredToken", 400, "The provided token has expired.")
    ILLEGAL_VERSIONING_CONFIGURATION = (
        "IllegalVersioningConfigurationException", 400,
        "The versioning configuration specified in the request is invalid.")
    INCOMPLETE_BODY = ("IncompleteBody", 400,
                       "You did not provide the number of bytes specified by the Content-Length HTTP header.")
    INSUFFICIENT_STORAGE = ("InsufficientStorage", 507, "The server's disk is full: there is not enough free "
                            "space to store this request. Deleting objects or aborting multipart uploads still "
                            "works and frees space once compaction runs.")
    INTERNAL_ERROR = ("InternalError", 500, "We encountered an internal error. Please try again.")
    INVALID_ACCESS_KEY_ID = ("InvalidAccessKeyId", 403,
                             "The AWS access key ID you provided does not exist in our records.")
    INVALID_ARGUMENT = ("InvalidArgument", 400, "Invalid Argument")
    INVALID_BUCKET_NAME = ("InvalidBucketName", 400, "The specified bucket is not valid.")
    INVALID_BUCKET_STATE = ("InvalidBucketState", 409, "The request is not valid with the current state of "
                            "the bucket.")
    INVALID_DIGEST = ("InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
    INVALID_LOCATION_CONSTRAINT = ("InvalidLocationConstraint", 400,
                                   "The specified location constraint is not valid.")
    INVALID_OBJECT_STATE = ("InvalidObjectState", 403, "The operation is not valid for the current state of "
                            "the object.")
    INVALID_PART = ("InvalidPart", 400, "One or more of the specified parts could not be found. The part may "
                    "not have been uploaded, or the specified entity tag may not match the part's entity tag.")
    INVALID_PART_ORDER = ("InvalidPartOrder", 400, "The list of parts was not in ascending order. The parts "
                          "list must be specified in order by part number.")
    INVALID_PART_NUMBER = ("InvalidPartNumber", 416, "The requested partnumber is not satisfiable")
    INVALID_RANGE = ("InvalidRange", 416, "The requested range is not satisfiable")
    INVALID_REQUEST = ("InvalidRequest", 400, "Invalid Request")
    INVALID_STORAGE_CLASS = ("InvalidStorageClass", 400, "The storage class you specified is not valid.")
    INVALID_TAG = ("InvalidTag", 400, "The tag provided was not a valid tag.")
    INVALID_URI = ("InvalidURI", 400, "Couldn't parse the specified URI.")
    KEY_TOO_LONG = ("KeyTooLongError", 400, "Your key is too long.")
    MALFORMED_XML = ("MalformedXML", 400, "The XML you provided was not well-formed or did not validate "
                     "against our published schema.")
    MALFORMED_POLICY = ("MalformedPolicy", 400, "Policy has invalid resource.")
    METADATA_TOO_LARGE = ("MetadataTooLarge", 400, "Your metadata headers exceed the maximum allowed "
                          "metadata size.")
    METHOD_NOT_ALLOWED = ("MethodNotAllowed", 405, "The specified method is not allowed against this resource.")
    MISSING_CONTENT_LENGTH = ("MissingContentLength", 411, "You must provide the Content-Length HTTP header.")
    MISSING_SECURITY_HEADER = ("MissingSecurityHeader", 400, "Your request is missing a required header.")
    NO_SUCH_BUCKET = ("NoSuchBucket", 404, "The specified bucket does not exist")
    NO_SUCH_BUCKET_POLICY = ("NoSuchBucketPolicy", 404, "The bucket policy does not exist")
    NO_SUCH_CORS_CONFIGURATION = ("NoSuchCORSConfiguration", 404, "The CORS configuration does not exist")
    NO_SUCH_KEY = ("NoSuchKey", 404, "The specified key does not exist.")
    NO_SUCH_LIFECYCLE_CONFIGURATION = ("NoSuchLifecycleConfiguration", 404,
                                       "The lifecycle configuration does not exist")
    NO_SUCH_TAG_SET = ("NoSuchTagSet", 404, "The TagSet does not exist")
    NO_SUCH_UPLOAD = ("NoSuchUpload", 404, "The specified upload does not exist. The upload ID may be invalid, "
                      "or the upload may have been aborted or completed.")
    NO_SUCH_VERSION = ("NoSuchVersion", 404, "The specified version does not exist.")
    NOT_IMPLEMENTED = ("NotImplemented", 501, "A header you provided implies functionality that is not "
                       "implemented.")
    NOT_MODIFIED = ("NotModified", 304, "Not Modified")
    PRECONDITION_FAILED = ("PreconditionFailed", 412, "At least one of the preconditions you specified did "
                           "not hold.")
    CONDITIONAL_REQUEST_CONFLICT = ("ConditionalRequestConflict", 409, "A conflicting operation occurred.")
    REQUEST_TIME_TOO_SKEWED = ("RequestTimeTooSkewed", 403, "The difference between the request time and the "
                               "server's time is too large.")
    REQUEST_HEADER_SECTION_TOO_LARGE = ("RequestHeaderSectionTooLarge", 400, "Your request header section "
                                        "exceeds the maximum allowed size.")
    REQUEST_TIMEOUT = ("RequestTimeout", 400, "Your socket connection to the server was not read from or "
                       "written to within the timeout period.")
    SERVICE_UNAVAILABLE = ("ServiceUnavailable", 503, "Please reduce your request rate.")
    SIGNATURE_DOES_NOT_MATCH = (
        "SignatureDoesNotMatch", 403,
        "The request signature we calculated does not match the signature you provided. Check your key and "
        "signing method.")
    SLOW_DOWN = ("SlowDown", 503, "Please reduce your request rate.")
    TOO_MANY_BUCKETS = ("TooManyBuckets", 400, "You have attempted to create more buckets than allowed.")
    X_AMZ_CONTENT_SHA256_MISMATCH = ("XAmzContentSHA256Mismatch", 400, "The provided 'x-amz-content-sha256' "
                                     "header does not match what was computed.")
    INVALID_ENCRYPTION_ALGORITHM = ("InvalidEncryptionAlgorithmError", 400,
                                    "The encryption request you specified is not valid.")
    OBJECT_LOCK_CONFIGURATION_NOT_FOUND = ("ObjectLockConfigurationNotFoundError", 404,
                                           "Object Lock configuration does not exist for this bucket")
    NO_SUCH_OBJECT_LOCK_CONFIGURATION = ("NoSuchObjectLockConfiguration", 404,
                                         "The specified object does not have a ObjectLock configuration")
    INVALID_RETENTION_PERIOD = ("InvalidRetentionPeriod", 400,
                                "The retention period must be a positive integer value.")
    NO_SUCH_PUBLIC_ACCESS_BLOCK = ("NoSuchPublicAccessBlockConfiguration", 404,
                                   "The public access block configuration was not found")
    OWNERSHIP_CONTROLS_NOT_FOUND = ("OwnershipControlsNotFoundError", 404,
                                    "The bucket ownership controls were not found")
    SERVER_SIDE_ENCRYPTION_NOT_FOUND = ("ServerSideEncryptionConfigurationNotFoundError", 404,
                                        "The server side encryption configuration was not found")
    KMS_NOT_FOUND = ("KMS.NotFoundException", 400, "Invalid keyId: no such key in the KMS.")  # engine/kms_ops.py
    KMS_DISABLED = ("KMS.DisabledException", 400, "The KMS key is disabled.")
    NO_SUCH_WEBSITE_CONFIGURATION = ("NoSuchWebsiteConfiguration", 404,
                                     "The specified bucket does not have a website configuration")
    REPLICATION_CONFIGURATION_NOT_FOUND = ("ReplicationConfigurationNotFoundError", 404,
                                           "The replication configuration was not found")
    # ACLs and object ownership (api/s3/acl.py)
    MALFORMED_ACL = ("MalformedACLError", 400, "The XML you provided was not well-formed or did not validate "
                     "against our published schema")
    UNRESOLVABLE_GRANT_BY_EMAIL = ("UnresolvableGrantByEmailAddress", 400,
                                   "The e-mail address you provided does not match any account on record.")
    ACL_NOT_SUPPORTED = ("AccessControlListNotSupported", 400, "The bucket does not allow ACLs")
    INVALID_BUCKET_ACL_WITH_OWNERSHIP = ("InvalidBucketAclWithObjectOwnership", 400,
                                         "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced "
                                         "setting")
    # S3 Select / SQL (engine/select)
    PARSE_UNEXPECTED_TOKEN = ("ParseUnexpectedToken", 400, "The SQL expression could not be parsed.")
    UNSUPPORTED_SQL_OPERATION = ("UnsupportedSqlOperation", 400, "The SQL operation is not supported.")
    EVALUATOR_BINDING_DOES_NOT_EXIST = ("EvaluatorBindingDoesNotExist", 400,
                                        "A column name or a path provided does not exist in the SQL expression.")
    CAST_FAILED = ("CastFailed", 400, "Attempt to convert from one data type to another using CAST failed in the "
                   "SQL expression.")
    CSV_PARSING_ERROR = ("CSVParsingError", 400, "Encountered an error parsing the CSV file.")
    JSON_PARSING_ERROR = ("JSONParsingError", 400, "Encountered an error parsing the JSON file.")
    PARQUET_PARSING_ERROR = ("ParquetParsingError", 400, "Encountered an error parsing the Parquet file.")
    INVALID_EXPRESSION_TYPE = ("InvalidExpressionType", 400, "The ExpressionType is invalid. Only SQL expressions "
                               "are supported.")
    MISSING_REQUIRED_PARAMETER = ("MissingRequiredParameter", 400, "The SelectRequest entity is missing a "
                                  "required parameter.")
    INVALID_COMPRESSION_FORMAT = ("InvalidCompressionFormat", 400, "The file is not in a supported compression "
                                  "format.")
    UNSUPPORTED_SCAN_RANGE_INPUT = ("UnsupportedScanRangeInput", 400, "Scan range queries are not supported on "
                                    "this type of object.")
    QUERY_TIMEOUT = ("QueryTimeout", 400, "The query ran longer than the server's S4_SELECT_TIMEOUT.")
    RESOURCE_EXHAUSTED = ("ResourceExhausted", 400, "The query needs more memory than S4_SELECT_MAX_MEMORY.")
    OVER_MAX_RECORD_SIZE = ("OverMaxRecordSize", 400, "The length of a record in the input or result is greater "
                            "than maxCharsPerRecord of 1 MB.")
    BUSY = ("Busy", 503, "The service is unavailable. Please retry.")
    # POST object, browser form uploads (api/s3/post_object.py)
    MALFORMED_POST_REQUEST = ("MalformedPOSTRequest", 400, "The body of your POST request is not well-formed "
                              "multipart/form-data.")
    INVALID_POLICY_DOCUMENT = ("InvalidPolicyDocument", 400, "The content of the form does not meet the "
                               "conditions specified in the policy document.")
    MAX_POST_PRE_DATA_LENGTH_EXCEEDED = ("MaxPostPreDataLengthExceeded", 400, "Your POST request fields "
                                         "preceding the upload file were too large.")
    INCORRECT_NUMBER_OF_FILES_IN_POST_REQUEST = ("IncorrectNumberOfFilesInPostRequest", 400,
                                                 "POST requires exactly one file upload per request.")

    def __init__(self, aws_code: str, status: int, default_message: str) -> None:
        self.aws_code = aws_code
        self.status = status
        self.default_message = default_message


class S3Error(Exception):
    """An S3 error response: code, message, and the extra XML fields/headers it carries."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        resource: str | None = None,
        headers: Mapping[str, str] | None = None,
        **fields: str,
    ) -> None:
        self.code = code
        self.message = message or code.default_message
        self.resource = resource
        self.headers = dict(headers or {})
        self.fields = fields
        super().__init__(f"{code.aws_code}: {self.message}")

    @property
    def status(self) -> int:
        return self.code.status


#: Seconds a client is asked to wait (``Retry-After``) when the node cannot commit.
RETRY_AFTER_S = 1


class ServiceUnavailableError(S3Error):
    """The node cannot commit now: its sequencer is stopped, its journal closed, or (in a worker process) the
    supervisor that owns them is gone. Always ``503 ServiceUnavailable`` with ``Retry-After``, in every process
    mode. A request that fails so was not acknowledged; if the channel broke after the sequencer committed, the
    write may still be recorded, which an S3 client's retry (idempotent PUT/DELETE) settles."""

    def __init__(self, reason: str = "",
                 message: str = "The node cannot commit writes right now; retry later.") -> None:
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, message, headers={"Retry-After": str(RETRY_AFTER_S)})
        self.reason = reason


class PoolUnavailableError(ServiceUnavailableError):
    """A cluster node's pool, not its storage, cannot take the write now: fewer than W replicas hold it, or this node
    is still catching up (cluster/replicator.py). This node's volumes are sound (the write's bytes were synced with its
    local commit, or never used), so the engine keeps writing to them, unlike after another 503 (engine.py ``_run``).
    Crosses the worker channel as itself (engine/remote/wire.py)."""


class StoredDataDamagedError(S3Error):
    """A read found stored bytes that fail their checksums (engine/volumes/reads.py): a server-side fault, 500
    ``InternalError`` like any other, but one whose message is safe and useful to show (it names no path or
    internal detail), so the error boundary keeps it instead of the generic text."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.INTERNAL_ERROR, "The stored data of this object failed its checksum, so it was "
                         "not sent. The node has marked it damaged; storing the same bytes again repairs it.")


def client_error(exc: BaseException) -> S3Error:
    """What a client is told about ``exc``: an S3Error as itself; "cannot commit now" (the journal or its group
    commit closed) as ServiceUnavailableError; anything else is a bug, a generic InternalError (the caller logs
    the original with the request id)."""
    from s4.journal.errors import JournalClosedError  # the journal is below the engine; imported on error only

    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, JournalClosedError):
        return ServiceUnavailableError(str(exc))
    return S3Error(ErrorCode.INTERNAL_ERROR)


class PeerBatchRefused(Exception):
    """A batch of a peer's events was refused as a whole: nothing of it was journaled or applied
    (engine/replica.py; docs/architecture/replication.md). Not an S3 error: the cluster layer answers its peer."""


class MissingBlobsError(PeerBatchRefused):
    """Events reference content this node does not hold: ``hashes`` (sha256, raw) must be stored first."""

    def __init__(self, hashes: list[bytes]) -> None:
        super().__init__(f"{len(hashes)} referenced blobs are not stored on this node: "
                         + ", ".join(h.hex()[:16] for h in hashes[:8]))
        self.hashes = hashes


class PeerEventRefused(PeerBatchRefused):
    """An event that a replica never takes from a peer (a node-local ``blob.*``/``volume.*`` event, an unknown
    type), or one this node cannot apply yet (``behind``: a bucket incarnation it does not hold; catch up first)."""

    def __init__(self, message: str, *, behind: bool = False) -> None:
        super().__init__(message)
        self.behind = behind
