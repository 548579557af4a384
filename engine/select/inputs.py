"""What a query reads: the input format (InputSerialization, or the SQL endpoint's format fields) and the Stats
event's byte counters."""

from __future__ import annotations

from dataclasses import dataclass, field

BATCH_ROWS = 8192
BLOCK_BYTES = 1 << 20
#: S3 Select's maxCharsPerRecord: an input or output record longer than this is OverMaxRecordSize.
MAX_RECORD_BYTES = 1 << 20


@dataclass(frozen=True)
class ObjectRef:
    """One object a query reads, as the query process knows it: its key, size and place in the job's list."""

    key: str
    size: int
    index: int


@dataclass
class CsvInput:
    header: str = "NONE"  # USE | IGNORE | NONE
    delimiter: str = ","
    record_delimiter: str = "\n"
    quote: str = '"'
    escape: str = '"'
    comments: str = ""
    quoted_record_delimiter: bool = False
    infer_types: bool = False  # multi-object SQL infers like DataFusion; S3 Select keeps every field a string


@dataclass
class InputSpec:
    """What InputSerialization (or the SQL endpoint's format fields) describe."""

    kind: str  # csv | json | parquet
    compression: str = "NONE"
    csv: CsvInput = field(default_factory=CsvInput)
    json_type: str = "LINES"  # LINES | DOCUMENT | AUTO
    json_path: list[str] = field(default_factory=list)
    scan_range: tuple[int | None, int | None] | None = None


class Meter:
    """Bytes read from storage and bytes after decompression: the Stats event's numbers."""

    def __init__(self) -> None:
        self.scanned = 0
        self.processed = 0
