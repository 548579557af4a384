"""The admin API under ``/api/``: JSON in and out, JWT bearer tokens, SuperUser only (docs/architecture/iam.md)."""
