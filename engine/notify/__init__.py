"""Bucket notifications: configurations, AWS event messages and their delivery from the journal.

docs/architecture/notifications.md. ``rules``: the stored configuration and its matching; ``messages``: journal
events -> AWS S3 event records; ``targets``: the operator's webhooks; ``store``: durable cursors and parked
messages; ``delivery``: the background job that reads the journal and POSTs.
"""
