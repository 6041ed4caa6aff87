"""Job change notices over Redis pub/sub, for event streams: a doorbell, never the data.

On a fleet (a redis:// broker) the store rings `{queue_prefix}regtrain:job:{id}` after each
change it commits to a job (claim, epoch, checkpoint, finish, cancel, release), and each API
process listens on one pattern subscription for every stream it serves. A stream that hears
its job's bell reads the store at once; it also reads it every FALLBACK_POLL_S seconds, so a
lost notice (Redis restarting, a reaper's transition) only delays an event. The embedded
default has no Redis: its streams read the store every POLL_S seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import redis

from service.settings import Settings

log = logging.getLogger("regtrain.events")

POLL_S = 0.5  # without pub/sub
FALLBACK_POLL_S = 5.0  # with it


def _redis_url(settings: Settings) -> str | None:
    url = settings.broker_url or ""
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


def _prefix(settings: Settings) -> str:
    return f"{settings.queue_prefix}regtrain:job:"


class Doorbell:
    """The sending side, for the store's writers (workers and the API's cancel)."""

    def __init__(self, settings: Settings) -> None:
        url = _redis_url(settings)
        self.prefix = _prefix(settings)
        # Short timeouts: a slow or dead Redis must never hold up training.
        self._redis = (
            redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5) if url else None
        )

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def ring(self, job_id: str, *_: Any) -> None:
        """A store listener (Repository.listeners): every change rings, epochs included."""
        if self._redis is None:
            return
        try:
            self._redis.publish(self.prefix + job_id, b"")
        except redis.RedisError as e:  # best effort: streams fall back to reading the store
            log.debug("could not ring job %s: %s", job_id, e)


class Listener:
    """The receiving side, one per API process: one pattern subscription for every stream."""

    def __init__(self, settings: Settings) -> None:
        self.url = _redis_url(settings)
        self.prefix = _prefix(settings)
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    @property
    def poll_s(self) -> float:
        return FALLBACK_POLL_S if self.url else POLL_S

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the job's bell rings, for as long as the block runs."""
        bell = asyncio.Event()
        if self.url is not None and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._listen())
        self._waiters[job_id].add(bell)
        try:
            yield bell
        finally:
            self._waiters[job_id].discard(bell)
            if not self._waiters[job_id]:
                del self._waiters[job_id]

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        url = self.url
        assert url is not None, "started only with a redis:// broker"
        while True:
            try:
                client: Any = aioredis.Redis.from_url(url)
                async with client, client.pubsub() as pubsub:
                    await pubsub.psubscribe(self.prefix + "*")
                    async for message in pubsub.listen():
                        if message["type"] != "pmessage":
                            continue
                        job_id = message["channel"].decode().removeprefix(self.prefix)
                        for bell in self._waiters.get(job_id, ()):
                            bell.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("event listener lost Redis (%s); retrying in 1 s", e)
                await asyncio.sleep(1)
