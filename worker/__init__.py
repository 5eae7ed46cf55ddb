"""The image-processing side: pure imaging functions, model runtime, the per-item pipeline, Celery tasks."""
