"""aws-chunked decoding: AWS streaming examples, botocore trailer bodies, arbitrary splits, and failures."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from s4.api.auth.chunked import ChunkedDecoder, ChunkedTrailers, decode_aws_chunked, parse_trailer_names
from s4.api.auth.request import AuthContext, AuthRequest
from s4.api.auth.sigv4 import EMPTY_SHA256, verify_sigv4
from s4.engine.checksums import checksum_of
from s4.engine.errors import ErrorCode, S3Error

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
SIGS = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]
TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
TRAILER_SIGS = ["b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
                "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
                "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992"]
TRAILER_SIG = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
PAYLOAD = b"a" * 66560


def doc_context(trailer: bool) -> AuthContext:
    """Authenticate the AWS example's seed request, exactly as the server would before reading the body."""
    from datetime import UTC, datetime

    headers = {"host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z",
               "x-amz-storage-class": "REDUCED_REDUNDANCY", "content-encoding": "aws-chunked",
               "x-amz-decoded-content-length": "66560"}
    if trailer:
        headers.update({"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                        "x-amz-trailer": "x-amz-checksum-crc32c"})
        signed, sig = ("content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
                       "x-amz-storage-class;x-amz-trailer"), TRAILER_SEED
    else:
        headers.update({"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                        "content-length": "66824"})
        signed, sig = ("content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                       "x-amz-decoded-content-length;x-amz-storage-class"), SEED
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request,"
                                f"SignedHeaders={signed},Signature={sig}")
    req = AuthRequest("PUT", "/examplebucket/chunkObject.txt", "", headers)
    return verify_sigv4(req, {AKID: SECRET}.get, datetime(2013, 5, 24, tzinfo=UTC))


def doc_body(sigs: list[str], tail: bytes) -> bytes:
    return (f"10000;chunk-signature={sigs[0]}\r\n".encode() + b"a" * 65536 + b"\r\n"
            + f"400;chunk-signature={sigs[1]}\r\n".encode() + b"a" * 1024 + b"\r\n"
            + f"0;chunk-signature={sigs[2]}\r\n".encode() + tail)


DOC_TRAILER = f"x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{TRAILER_SIG}\r\n\r\n".encode()


def pieces(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    out, pos = [], 0
    for size in sizes:
        out.append(data[pos:pos + size])
        pos += size
    out.append(data[pos:])
    return [p for p in out if p]


async def _aiter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def decode(ctx: AuthContext, reads: list[bytes], trailer_names: list[str] | None = None,
           decoded_length: int | None = None) -> tuple[bytes, ChunkedTrailers]:
    trailers = ChunkedTrailers()

    async def run() -> bytes:
        out = bytearray()
        stream = decode_aws_chunked(_aiter(reads), ctx, trailer_names or [], decoded_length, trailers)
        async for part in stream:
            out += part
        return bytes(out)

    return asyncio.run(run()), trailers


def expect(code: ErrorCode, ctx: AuthContext, reads: list[bytes], trailer_names: list[str] | None = None,
           decoded_length: int | None = None) -> S3Error:
    with pytest.raises(S3Error) as info:
        decode(ctx, reads, trailer_names, decoded_length)
    assert info.value.code is code, info.value
    return info.value


# --- AWS documentation examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("split", [None, 1, 7, 86, 4096, 65536, 70000])
def test_aws_signed_streaming_example(split: int | None) -> None:
    ctx = doc_context(trailer=False)
    body = doc_body(SIGS, b"\r\n")
    assert len(body) == 66824  # the example's Content-Length
    reads = [body] if split is None else [body[i:i + split] for i in range(0, len(body), split)]
    data, trailers = decode(ctx, reads, decoded_length=66560)
    assert data == PAYLOAD and trailers.complete and trailers.checksums == {}


@pytest.mark.parametrize("extra_blank", [False, True])
def test_aws_signed_trailer_example(extra_blank: bool) -> None:
    ctx = doc_context(trailer=True)
    body = doc_body(TRAILER_SIGS, (b"\r\n" if extra_blank else b"") + DOC_TRAILER)
    for split in (1000, 3):
        reads = [body[i:i + split] for i in range(0, len(body), split)]
        data, trailers = decode(ctx, reads, parse_trailer_names("x-amz-checksum-crc32c"), 66560)
        assert data == PAYLOAD
        assert trailers.checksums == {"CRC32C": "sOO8/Q=="}
        assert trailers.headers == {"x-amz-checksum-crc32c": "sOO8/Q=="}


def test_aws_example_tampering() -> None:
    ctx = doc_context(trailer=False)
    body = doc_body(SIGS, b"\r\n")
    flipped = body[:66000] + b"b" + body[66001:]  # one payload byte in the second chunk
    expect(ErrorCode.SIGNATURE_DOES_NOT_MATCH, ctx, [flipped])
    swapped = doc_body([SIGS[1], SIGS[0], SIGS[2]], b"\r\n")
    expect(ErrorCode.SIGNATURE_DOES_NOT_MATCH, ctx, [swapped])
    expect(ErrorCode.SIGNATURE_DOES_NOT_MATCH, doc_context(trailer=True), [body])  # wrong seed
    unsigned_chunk = body.replace(f";chunk-signature={SIGS[1]}".encode(), b"")
    expect(ErrorCode.SIGNATURE_DOES_NOT_MATCH, ctx, [unsigned_chunk])


def test_aws_trailer_example_tampering() -> None:
    ctx = doc_context(trailer=True)
    names = ["x-amz-checksum-crc32c"]
    bad_value = doc_body(TRAILER_SIGS, DOC_TRAILER.replace(b"sOO8/Q==", b"AAAAAA=="))
    expect(ErrorCode.SIGNATURE_DOES_NOT_MATCH, ctx, [bad_value], names)  # trailer signature covers it
    bad_sig = doc_body(TRAILER_SIGS, DOC_TRAILER.replace(TRAILER_SIG.encode(), b"0" * 64))
    expect(ErrorCode.SIGNATURE_DOES_NOT_MATCH, ctx, [bad_sig], names)
    no_sig = doc_body(TRAILER_SIGS, b"x-amz-checksum-crc32c:sOO8/Q==\r\n\r\n")
    expect(ErrorCode.SIGNATURE_DOES_NOT_MATCH, ctx, [no_sig], names)


def test_decoded_length_enforced() -> None:
    ctx = doc_context(trailer=False)
    body = doc_body(SIGS, b"\r\n")
    expect(ErrorCode.INCOMPLETE_BODY, ctx, [body], decoded_length=66561)
    expect(ErrorCode.INCOMPLETE_BODY, ctx, [body], decoded_length=66559)


def test_truncation_at_every_framing_point() -> None:
    ctx = doc_context(trailer=False)
    body = doc_body(SIGS, b"\r\n")
    final_header_end = len(body) - 2
    for cut in [*range(0, 120), *range(65620, 65720), *range(len(body) - 100, len(body))]:
        if cut == final_header_end:
            assert decode(ctx, [body[:cut]])[0] == PAYLOAD  # only the closing CRLF is missing
        else:
            with pytest.raises(S3Error) as info:
                decode(ctx, [body[:cut]])
            assert info.value.code in (ErrorCode.INCOMPLETE_BODY, ErrorCode.SIGNATURE_DOES_NOT_MATCH)


# --- self-built bodies: signed per the spec, unsigned per botocore's framing --------------------------------


def sign_body(ctx: AuthContext, chunks: list[bytes], trailers: list[tuple[str, str]] | None = None) -> bytes:
    """Build a signed aws-chunked body straight from the AWS description (independent of the decoder)."""
    prev, out = ctx.seed_signature, []
    for data in [*chunks, b""]:
        sts = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", ctx.amz_date, ctx.scope, prev, EMPTY_SHA256,
                         hashlib.sha256(data).hexdigest()))
        prev = hmac.new(ctx.signing_key, sts.encode(), hashlib.sha256).hexdigest()
        out.append(f"{len(data):x};chunk-signature={prev}\r\n".encode() + data + (b"\r\n" if data else b""))
    if trailers is None:
        out.append(b"\r\n")
        return b"".join(out)
    canonical = "".join(f"{n}:{v}\n" for n, v in trailers)
    sts = "\n".join(("AWS4-HMAC-SHA256-TRAILER", ctx.amz_date, ctx.scope, prev,
                     hashlib.sha256(canonical.encode()).hexdigest()))
    signature = hmac.new(ctx.signing_key, sts.encode(), hashlib.sha256).hexdigest()
    out += [f"{n}:{v}\r\n".encode() for n, v in trailers]
    out.append(f"x-amz-trailer-signature:{signature}\r\n\r\n".encode())
    return b"".join(out)


def unsigned_body(chunks: list[bytes], name: str, value: str) -> bytes:
    """botocore's AwsChunkedWrapper framing."""
    out = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c]
    return b"".join(out) + f"0\r\n{name}:{value}\r\n\r\n".encode()


SIGNED = doc_context(trailer=False)
SIGNED_TRAILER = doc_context(trailer=True)
UNSIGNED_TRAILER = AuthContext(access_key=AKID, payload_mode="streaming-unsigned-trailer")


def test_small_body_split_at_every_boundary() -> None:
    chunks = [b"hello ", b"chunked", b" world"]
    crc, sha = checksum_of("CRC32", b"".join(chunks)), checksum_of("SHA256", b"".join(chunks))
    bodies = [
        (SIGNED, sign_body(SIGNED, chunks), []),
        (SIGNED_TRAILER, sign_body(SIGNED_TRAILER, chunks, [("x-amz-checksum-crc32", crc)]),
         ["x-amz-checksum-crc32"]),
        (UNSIGNED_TRAILER, unsigned_body(chunks, "x-amz-checksum-sha256", sha), ["x-amz-checksum-sha256"]),
    ]
    for ctx, body, names in bodies:
        for i in range(len(body) + 1):
            for j in (i, min(i + 1, len(body)), min(i + 5, len(body))):
                data, trailers = decode(ctx, pieces(body, [i, j - i]), names, 19)
                assert data == b"hello chunked world" and trailers.complete


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=40), max_size=5),
       sizes=st.lists(st.integers(min_value=1, max_value=30), max_size=40),
       mode=st.sampled_from(["signed", "signed-trailer", "unsigned-trailer"]))
def test_arbitrary_splits(chunks: list[bytes], sizes: list[int], mode: str) -> None:
    payload = b"".join(chunks)
    crc = checksum_of("CRC32C", payload)
    if mode == "signed":
        ctx, body, names = SIGNED, sign_body(SIGNED, chunks), []
    elif mode == "signed-trailer":
        ctx, names = SIGNED_TRAILER, ["x-amz-checksum-crc32c"]
        body = sign_body(SIGNED_TRAILER, chunks, [("x-amz-checksum-crc32c", crc)])
    else:
        ctx, names = UNSIGNED_TRAILER, ["x-amz-checksum-crc32c"]
        body = unsigned_body(chunks, "x-amz-checksum-crc32c", crc)
    data, trailers = decode(ctx, pieces(body, sizes), names, len(payload))
    assert data == payload
    assert trailers.checksums == ({} if mode == "signed" else {"CRC32C": crc})


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"])
def test_unsigned_trailer_good_and_bad(algorithm: str) -> None:
    chunks = [b"x" * 1000, b"y" * 17]
    name = f"x-amz-checksum-{algorithm.lower()}"
    good = checksum_of(algorithm, b"".join(chunks))
    data, trailers = decode(UNSIGNED_TRAILER, [unsigned_body(chunks, name, good)], [name], 1017)
    assert trailers.checksums == {algorithm: good} and len(data) == 1017
    bad = checksum_of(algorithm, b"something else")
    expect(ErrorCode.BAD_DIGEST, UNSIGNED_TRAILER, [unsigned_body(chunks, name, bad)], [name])
    expect(ErrorCode.INVALID_REQUEST, UNSIGNED_TRAILER, [unsigned_body(chunks, name, "!!")], [name])


@pytest.mark.parametrize("body, names, code", [
    (b"zz\r\nab\r\n0\r\n\r\n", [], ErrorCode.INVALID_REQUEST),  # not hex
    (b"2\r\nabc\r\n0\r\n\r\n", [], ErrorCode.INVALID_REQUEST),  # data longer than declared
    (b"2\r\nab\r\n0\r\n\r\ngarbage", [], ErrorCode.INVALID_REQUEST),  # bytes after the end
    (b"2\r\nab\r\n0\r\nx-amz-checksum-crc32:" + checksum_of("CRC32", b"ab").encode() + b"\r\n\r\n", [],
     ErrorCode.INVALID_REQUEST),  # trailer not declared
    (b"2\r\nab\r\n0\r\n\r\n", ["x-amz-checksum-crc32"], ErrorCode.INCOMPLETE_BODY),  # declared, not sent
    (b"2\r\nab\r\n0\r\nno-colon\r\n\r\n", [], ErrorCode.INVALID_REQUEST),
    (b"2\r\na", [], ErrorCode.INCOMPLETE_BODY),
    (b"1" * 5000, [], ErrorCode.INVALID_REQUEST),  # header line never ends
    (b"", [], ErrorCode.INCOMPLETE_BODY),
])
def test_malformed_framing(body: bytes, names: list[str], code: ErrorCode) -> None:
    expect(code, UNSIGNED_TRAILER, [body], names)


def test_unsupported_trailer_checksum() -> None:
    with pytest.raises(S3Error) as info:
        ChunkedDecoder(UNSIGNED_TRAILER, ["x-amz-checksum-md4"], None)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_payload_is_streamed_not_buffered() -> None:
    """Each network read's payload comes straight back: memory is bounded by the read, not the chunk."""
    big = b"z" * (1 << 20)
    body = unsigned_body([big], "x-amz-checksum-crc32", checksum_of("CRC32", big))
    decoder = ChunkedDecoder(UNSIGNED_TRAILER, ["x-amz-checksum-crc32"], len(big))
    header = body.index(b"\r\n") + 2
    assert decoder.feed(body[:header]) == []
    for pos in range(header, header + len(big), 65536):
        assert sum(map(len, decoder.feed(body[pos:min(pos + 65536, header + len(big))]))) > 0
    assert decoder.feed(body[header + len(big):]) == []
    decoder.close()
    assert decoder.done and decoder.trailers.checksums["CRC32"] == checksum_of("CRC32", big)


# --- boto3 end to end: the exact bodies botocore sends ----------------------------------------------------


class _Captured(Exception):
    pass


def captured_put(**params: object) -> tuple[AuthRequest, bytes]:
    client = boto3.client("s3", endpoint_url="https://localhost:9443", region_name="us-east-1",
                          aws_access_key_id="AKIDBOTO", aws_secret_access_key="boto/secret+key",
                          config=Config(signature_version="s3v4", retries={"max_attempts": 0}))
    box: list[AWSPreparedRequest] = []

    def grab(request: AWSPreparedRequest, **_: object) -> None:
        box.append(request)
        raise _Captured

    client.meta.events.register("before-send.s3", grab)
    with pytest.raises(_Captured):
        client.put_object(Bucket="b", Key="k", **params)
    prepared = box[0]
    parts = urlsplit(prepared.url)
    headers = {k.lower(): v.decode("latin-1") if isinstance(v, bytes) else str(v)
               for k, v in prepared.headers.items()}
    body = prepared.body.read() if hasattr(prepared.body, "read") else prepared.body
    return AuthRequest("PUT", parts.path, parts.query, headers), body


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"])
def test_boto3_unsigned_trailer_upload(algorithm: str) -> None:
    payload = bytes(range(256)) * 10000  # 2.5 MB: botocore frames it as several 1 MiB chunks
    req, body = captured_put(Body=io.BytesIO(payload), ChecksumAlgorithm=algorithm)
    ctx = verify_sigv4(req, {"AKIDBOTO": "boto/secret+key"}.get)
    assert ctx.payload_mode == "streaming-unsigned-trailer"
    names = parse_trailer_names(req.headers["x-amz-trailer"])
    length = int(req.headers["x-amz-decoded-content-length"])
    data, trailers = decode(ctx, pieces(body, [100_000] * 40), names, length)
    assert data == payload
    assert trailers.checksums == {algorithm: checksum_of(algorithm, payload)}
    corrupted = body.replace(b"\x00\x01\x02", b"\x00\x01\x03", 1)
    expect(ErrorCode.BAD_DIGEST, ctx, [corrupted], names, length)
