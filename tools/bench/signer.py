"""A fast client-side SigV4 header signer for the benchmark (UNSIGNED-PAYLOAD; signing key cached per day).

botocore's signer costs ~150 µs a request, which on a 2-core box shared with the server would measure the client,
not the server; this one does the two HMACs the protocol needs and nothing else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Signer:
    def __init__(self, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self._day = ""
        self._key = b""

    def _signing_key(self, day: str) -> bytes:
        if day != self._day:
            k = hmac.new(f"AWS4{self.secret_key}".encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._day, self._key = day, k
        return self._key

    def headers(self, method: str, host: str, path: str, query: dict[str, str] | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
        """Headers (incl. Authorization) for a request; ``path`` is the unencoded object path."""
        now = dt.datetime.now(dt.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        headers = {"host": host, "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": amz_date}
        for name, value in (extra or {}).items():
            headers[name.lower()] = value
        signed = sorted(headers)
        canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                                   for k, v in sorted((query or {}).items()))
        canonical = "\n".join([method, quote(path, safe="/-_.~"), canonical_query,
                               "".join(f"{h}:{headers[h].strip()}\n" for h in signed), ";".join(signed),
                               "UNSIGNED-PAYLOAD"])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                    f"SignedHeaders={';'.join(signed)}, Signature={signature}")
        del headers["host"]
        return headers
