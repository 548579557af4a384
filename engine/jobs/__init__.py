"""Background jobs (lifecycle, multipart TTL, compaction, scrubber): run once per node, act through commands."""
