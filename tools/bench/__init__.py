"""S3 benchmark: ``python -m s4.tools.bench [--endpoint URL] [--peer seaweedfs,rclone,noop] ...`` (see __main__)."""
