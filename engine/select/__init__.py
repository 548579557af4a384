"""S3 Select and multi-object SQL over stored objects: dialect translation (sql) and execution (runner)."""
