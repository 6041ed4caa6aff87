"""The queue: Celery's sending side (broker.py), the embedded file transport (file_broker.py) and the
Redis pub/sub doorbell for event streams. A message is only a doorbell: the store is the truth."""
