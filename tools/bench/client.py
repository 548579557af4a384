"""The benchmark's S3 client: one aiohttp session, every request SigV4-signed by :class:`Signer`.

Every server gets the same client (the no-op ceiling ignores the signature, but the client still pays for it), so
the client-side cost per request is identical across the servers compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp

from .signer import Signer

# No overall cap (a 64 MiB body on a slow server may take long), but a silent server fails the request.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)


class S3Error(RuntimeError):
    """A request answered with a status of 300 or more."""


class Client:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        self.endpoint = endpoint.rstrip("/")
        self.host = urlsplit(self.endpoint).netloc
        self.signer = Signer(access_key, secret_key, region)
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False),
                                             timeout=TIMEOUT, auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: bytes = b"",
                      headers: dict[str, str] | None = None, read: bool = True) -> tuple[int, bytes, Mapping[str, str]]:
        """Send one signed request; ``read=False`` streams the body away in 1 MiB pieces instead of keeping it."""
        assert self.session is not None
        signed = self.signer.headers(method, self.host, path, query, headers)
        url = self.endpoint + path
        async with self.session.request(method, url, params=query, data=body or None, headers=signed) as resp:
            data = b""
            if read:
                data = await resp.read()
            else:
                async for _ in resp.content.iter_chunked(1 << 20):
                    pass
            if resp.status >= 300:
                raise S3Error(f"{method} {path} -> {resp.status} {data[:200]!r}")
            return resp.status, data, resp.headers.copy()
