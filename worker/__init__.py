"""regtrain's worker side: the Celery app and the training engine."""
