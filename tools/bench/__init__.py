"""S3 benchmark runnable against any endpoint: ``python -m s4.tools.bench --endpoint URL ...``."""
