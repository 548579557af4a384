"""s4.engine: S3 semantics over the journal, LMDB views and volumes. Imports s4.journal only."""

from .engine import Engine, EngineOptions, OpenVersion
from .errors import ErrorCode, S3Error
from .ingest import Ingested

__all__ = ["Engine", "EngineOptions", "ErrorCode", "Ingested", "OpenVersion", "S3Error"]
