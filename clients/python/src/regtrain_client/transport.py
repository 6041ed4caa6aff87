"""HTTP under the client: one httpx connection pool, retries of failed connections with
exponential backoff, and the server's error answers raised as ApiError subclasses."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from regtrain_client.errors import BY_STATUS, ApiError, TooManyRequests

T = TypeVar("T")
RETRYABLE: tuple[type[Exception], ...] = (httpx.TransportError,)


class Transport:
    """Requests to one server. A request whose connection fails (or drops) is sent again up to
    `retries` times, waiting backoff, 2·backoff, 4·backoff, ... (at most max_backoff) between
    tries; with `give_up_after_s`, a server that has not answered yet (a wrong URL, a server not
    started) is given up on that many seconds after the first try, while one that has answered
    before (restarting, say) gets every retry."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        timeout: float | httpx.Timeout,
        retries: int,
        backoff: float,
        max_backoff: float,
        give_up_after_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.give_up_after_s = give_up_after_s
        self.reached = False  # has the server answered once?
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def wait_before_retry(self, attempt: int, started: float) -> bool:
        """Sleep before retry number `attempt` + 1; False when no retry is left."""
        if attempt >= self.retries:
            return False
        pause = min(self.backoff * 2**attempt, self.max_backoff)
        late = self.give_up_after_s is not None and time.monotonic() + pause - started > self.give_up_after_s
        if late and not self.reached:
            return False
        time.sleep(pause)
        return True

    def retrying(self, call: Callable[[], T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return call()
            except RETRYABLE:
                if not self.wait_before_retry(attempt, started):
                    raise
                attempt += 1

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.retrying(lambda: self.http.request(method, path, **kwargs))
        self.reached = True
        raise_for_detail(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """One streamed request, not retried (the caller knows where to resume); an error
        answer is read and raised."""
        with self.http.stream(method, path, **kwargs) as response:
            self.reached = True
            if response.status_code >= 400:
                response.read()
                raise_for_detail(response)
            yield response


def raise_for_detail(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text or response.reason_phrase
    error = BY_STATUS.get(response.status_code, ApiError)(response.status_code, detail)
    retry_after = response.headers.get("Retry-After", "")
    if isinstance(error, TooManyRequests) and retry_after.isdigit():
        error.retry_after_s = float(retry_after)
    raise error
