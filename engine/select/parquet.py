"""Parquet objects as a pyarrow dataset over a read-only filesystem whose files are ranged reads, so DuckDB's
projection and filter pushdown only fetch the footer and the row groups / columns it needs."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from ..errors import ErrorCode, S3Error
from .fetch import Fetcher
from .inputs import ObjectRef


class RangedFile(io.RawIOBase):
    """A seekable file over one object version; every read is a ranged read of the volumes."""

    def __init__(self, fetcher: Fetcher, version: ObjectRef) -> None:
        self.fetcher, self.version, self.pos = fetcher, version, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.version.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.version.size - self.pos)
        if n <= 0:
            return 0
        data = self.fetcher.read_range(self.version, self.pos, n)
        buffer[: len(data)] = data
        self.pos += len(data)
        self.fetcher.meter.processed += len(data)
        return len(data)


class ObjectsFileSystem(pafs.FileSystemHandler):  # type: ignore[misc]  # pyarrow ships no type information
    """A read-only pyarrow filesystem whose paths are the keys of the given versions."""

    def __init__(self, fetcher: Fetcher, versions: dict[str, ObjectRef]) -> None:
        self.fetcher, self.versions = fetcher, versions

    def get_type_name(self) -> str:
        return "s4"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [pafs.FileInfo(p, pafs.FileType.File, size=self.versions[p].size) if p in self.versions
                else pafs.FileInfo(p, pafs.FileType.NotFound) for p in paths]

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.get_file_info(list(self.versions))

    def open_input_file(self, path: str) -> pa.NativeFile:
        return pa.PythonFile(RangedFile(self.fetcher, self.versions[path]), mode="r")

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def _read_only(self, *_: Any, **__: Any) -> Any:
        raise OSError("read-only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _read_only
    move = copy_file = open_output_stream = open_append_stream = _read_only


def parquet_dataset(fetcher: Fetcher, versions: list[ObjectRef]) -> pads.Dataset:
    """Parquet objects as a pyarrow dataset: DuckDB pushes projections and filters into it."""
    fs = pafs.PyFileSystem(ObjectsFileSystem(fetcher, {v.key: v for v in versions}))
    try:
        return pads.dataset([v.key for v in versions], format="parquet", filesystem=fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise S3Error(ErrorCode.PARQUET_PARSING_ERROR, str(exc)) from exc
