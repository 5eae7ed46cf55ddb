"""The producer: list a prefix, record a job, enqueue small JSON tasks, report status."""
