"""Server-side encryption at rest: per-object data keys, AES-256-GCM per fixed-size plaintext segment.

``segments`` seals and opens one part's segments and maps plaintext ranges to stored ranges; ``keys`` holds the
master key (SSE-S3) and the customer-key handling (SSE-C); ``objects`` ties them to a version record's ``se``
field; ``reads`` decrypts exactly the segments a read needs. See docs/architecture/encryption.md.
"""

from .keys import CustomerKey, MasterKeys, load_or_create_master_key
from .objects import KmsKey, ObjectKeys, new_object_keys, open_object_keys
from .segments import SEGMENT_BYTES, DecryptError, PartSealer, SegmentCipher, sealed_size

__all__ = ["SEGMENT_BYTES", "CustomerKey", "DecryptError", "KmsKey", "MasterKeys", "ObjectKeys", "PartSealer",
           "SegmentCipher", "load_or_create_master_key", "new_object_keys", "open_object_keys", "sealed_size"]
