"""Telling the outside world: webhook delivery from the store's outbox, run by the API and by every
worker (whichever process claims a delivery sends it)."""
