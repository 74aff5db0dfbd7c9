"""Notifications to an optional webhook URL from the BudgetPolicy.

The payload is Slack-compatible (``text``) and carries the same facts as
structured JSON under ``gpubudget`` for other receivers. Delivery is best
effort: a slow or failing receiver is logged, and never delays enforcement.

:class:`Notifier` delivers on the event loop itself, with a few worker tasks
draining a bounded queue through one shared ``aiohttp`` session. Every POST,
body included, runs under a total deadline, so a receiver that trickles its
reply is cut off; nothing here uses the default thread pool that the calls
suspending workloads run on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from prometheus_client import Counter, Gauge
from yarl import URL

log = structlog.get_logger("gpu_budget.notify")

SENT: Final = "sent"
FAILED: Final = "failed"
TIMEOUT: Final = "timeout"
DROPPED: Final = "dropped"
RESULTS: Final = (SENT, FAILED, TIMEOUT, DROPPED)

NOTIFICATIONS = Counter(
    "gpubudget_notifications_total",
    "Webhook notifications by outcome: sent, failed, timeout or dropped (never sent).",
    ("result",),
)
QUEUE_DEPTH = Gauge(
    "gpubudget_notification_queue_depth", "Webhook notifications waiting to be sent."
)
for _result in RESULTS:  # every series exists from the start, at zero
    NOTIFICATIONS.labels(_result)

_CHUNK = 64 * 1024


def payload(
    namespace: str, budget: str, reason: str, message: str, spent: float, cap: float
) -> dict[str, Any]:
    share = spent / cap if cap else 0.0
    return {
        "text": f":money_with_wings: TrainingBudget {namespace}/{budget}: {message} "
        f"(${spent:,.2f} of ${cap:,.2f}, {share:.0%})",
        "gpubudget": {
            "namespace": namespace,
            "budget": budget,
            "reason": reason,
            "message": message,
            "spent": round(spent, 2),
            "cap": cap,
        },
    }


class Notifier:
    """Best-effort webhook delivery that never blocks or delays its caller.

    ``submit`` only enqueues; ``workers`` tasks POST what is queued, oldest
    first. When the queue is full the oldest notification is dropped, since
    the newest carries the current state. Failures, timeouts and drops are
    logged and counted, never raised.
    """

    def __init__(
        self, max_queue: int = 1000, workers: int = 4, deadline_seconds: float = 5.0
    ) -> None:
        if max_queue < 1 or workers < 1 or deadline_seconds <= 0:
            raise ValueError("max_queue and workers must be >= 1, deadline_seconds > 0")
        self.max_queue = max_queue
        self.workers = workers
        self.deadline_seconds = deadline_seconds
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(max_queue)
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._resolver: _DedicatedResolver | None = None
        self._stopped = False
        self._counts = dict.fromkeys(RESULTS, 0)

    @property
    def queue_depth(self) -> int:
        """Notifications queued and not yet taken by a worker."""
        return self._queue.qsize()

    @property
    def counts(self) -> dict[str, int]:
        """This notifier's outcomes so far (the Prometheus counter sums all notifiers)."""
        return dict(self._counts)

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start(self) -> None:
        """Start the workers and the shared session; a no-op when already running."""
        if self._tasks:
            return
        self._stopped = False
        self._resolver = _DedicatedResolver()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self._resolver),
            timeout=aiohttp.ClientTimeout(total=self.deadline_seconds),
        )
        self._tasks = [
            asyncio.create_task(self._work(), name=f"gpu-budget-notify-{index}")
            for index in range(self.workers)
        ]
        self._observe_depth()

    async def stop(self) -> None:
        """Cancel the workers and close the session; what is still queued is dropped.

        Safe to call more than once, and before ``start``.
        """
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        abandoned = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            abandoned += 1
        if abandoned:
            self._count(DROPPED, abandoned)
            log.warning(
                "notifications dropped", url=None, reason="shutdown", error=None, count=abandoned
            )
        self._observe_depth()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            await resolver.close()

    def submit(self, url: str, body: dict[str, Any]) -> bool:
        """Queue ``body`` for ``url`` without waiting.

        Returns True when it was queued and nothing had to be dropped for it;
        False when the queue was full (the oldest notification was dropped to
        make room) or the notifier has been stopped (``body`` is dropped).
        """
        if self._stopped:
            self._dropped(url, "stopped")
            return False
        dropped = False
        if self._queue.full():
            oldest_url, _ = self._queue.get_nowait()
            self._queue.task_done()
            self._dropped(oldest_url, "queue full")
            dropped = True
        self._queue.put_nowait((url, body))
        self._observe_depth()
        return not dropped

    async def _work(self) -> None:
        while True:
            url, body = await self._queue.get()
            self._observe_depth()
            try:
                await self._post(url, body)
            except asyncio.CancelledError:
                self._dropped(url, "shutdown")  # cut off mid-send by stop()
                raise
            except Exception as error:  # a bug here must not end the worker
                self._failed(FAILED, url, "internal error", error)
            finally:
                self._queue.task_done()

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        session = self._session
        if session is None:  # pragma: no cover - workers only run while started
            raise RuntimeError("Notifier is not started")
        try:
            async with (
                asyncio.timeout(self.deadline_seconds),
                session.post(url, json=body) as response,
            ):
                # Read the whole reply under the deadline: a receiver that
                # trickles its body is cut off, and the connection is reusable.
                async for _ in response.content.iter_chunked(_CHUNK):
                    pass
                if response.status >= 400:
                    self._failed(
                        FAILED, url, "http status", f"HTTP {response.status} {response.reason}"
                    )
                    return
        except TimeoutError as error:
            self._failed(TIMEOUT, url, "deadline exceeded", error, self.deadline_seconds)
            return
        except (aiohttp.ClientError, OSError, ValueError, TypeError) as error:
            self._failed(FAILED, url, type(error).__name__, error)
            return
        self._count(SENT)
        log.debug("notification sent", url=redact(url))

    def _failed(
        self,
        result: str,
        url: str,
        reason: str,
        error: BaseException | str,
        deadline: float | None = None,
    ) -> None:
        self._count(result)
        text = str(error) or type(error).__name__
        extra = {} if deadline is None else {"deadline_seconds": deadline}
        log.warning(
            "notification failed",
            url=redact(url),
            reason=reason,
            error=text.replace(url, redact(url)),
            result=result,
            **extra,
        )

    def _dropped(self, url: str, reason: str) -> None:
        self._count(DROPPED)
        log.warning("notification dropped", url=redact(url), reason=reason, error=None)

    def _count(self, result: str, amount: int = 1) -> None:
        self._counts[result] += amount
        NOTIFICATIONS.labels(result).inc(amount)

    def _observe_depth(self) -> None:
        QUEUE_DEPTH.set(self._queue.qsize())


def redact(url: str) -> str:
    """The URL's origin only: webhook paths (Slack's, for one) are secrets."""
    with contextlib.suppress(ValueError):
        parsed = URL(url)
        if parsed.absolute:
            hidden = parsed.path not in ("", "/") or bool(parsed.query_string)
            return str(parsed.origin()) + ("/..." if hidden else "")
    return "<invalid url>"


class _DedicatedResolver(AbstractResolver):
    """Host name lookups on one thread of their own, not the loop's default pool.

    ``getaddrinfo`` blocks, and aiohttp's default resolver runs it on the
    default executor, which the calls that suspend workloads share; a hanging
    DNS server must not take threads from them. The thread is only started
    by the first lookup: URLs with an IP address never need it.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-budget-dns")

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        lookup = functools.partial(
            socket.getaddrinfo,
            host,
            port,
            family=family,
            type=socket.SOCK_STREAM,
            flags=getattr(socket, "AI_ADDRCONFIG", 0),
        )
        infos = await loop.run_in_executor(self._executor, lookup)
        results: list[ResolveResult] = []
        for found_family, _, proto, _, address in infos:
            if found_family == socket.AF_INET6:
                if len(address) < 3:  # IPv6 not supported by this Python build
                    continue
                if address[3]:  # link-local: the scope id belongs in the host
                    name = functools.partial(
                        socket.getnameinfo,
                        address[:4],
                        socket.NI_NUMERICHOST | socket.NI_NUMERICSERV,
                    )
                    resolved, service = await loop.run_in_executor(self._executor, name)
                    resolved_host, resolved_port = resolved, int(service)
                else:
                    resolved_host, resolved_port = str(address[0]), int(address[1])
            elif found_family == socket.AF_INET:
                resolved_host, resolved_port = str(address[0]), int(address[1])
            else:
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=resolved_host,
                    port=resolved_port,
                    family=found_family,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        return results

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
