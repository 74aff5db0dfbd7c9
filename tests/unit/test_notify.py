"""Webhook notifications: real receivers on 127.0.0.1, no mocked network."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from gpu_budget import notify
from gpu_budget.notify import Notifier


def body(index: int = 0) -> dict[str, Any]:
    return notify.payload("ml-team", f"run-{index}", "ThresholdReached", "50% spent", 50.0, 100.0)


def metric(result: str) -> float:
    value = REGISTRY.get_sample_value("gpubudget_notifications_total", {"result": result})
    return value or 0.0


def depth_gauge() -> float:
    return REGISTRY.get_sample_value("gpubudget_notification_queue_depth") or 0.0


async def wait_until(condition: Callable[[], bool], seconds: float = 3.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polling state is the point in these tests
            await asyncio.sleep(0.01)


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class Receiver:
    """An aiohttp.web webhook receiver that records the JSON it is sent."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.content_types: list[str] = []
        self.status = 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.content_types.append(request.content_type)
        self.bodies.append(await request.json())
        return web.Response(status=self.status, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recorder = Receiver()
    app = web.Application()
    app.router.add_post("/services/T000/B000/secret-token", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = bound_socket()
    await web.SockSite(runner, sock).start()
    recorder.url = f"http://127.0.0.1:{sock.getsockname()[1]}/services/T000/B000/secret-token"
    yield recorder
    await runner.cleanup()


class Trickler:
    """Accepts, then answers one byte a second and never finishes.

    ``mode="body"`` sends complete headers (Content-Length far ahead) and then
    trickles the body; ``mode="headers"`` trickles the headers themselves.
    """

    def __init__(self, mode: str = "body") -> None:
        self.mode = mode
        self.connections = 0
        self.open = 0
        self.bytes_trickled = 0
        self.url = ""
        self._stopping = asyncio.Event()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        self.open += 1
        stopping = asyncio.ensure_future(self._stopping.wait())
        hung_up: asyncio.Future[bytes] | None = None
        try:
            await reader.readuntil(b"\r\n\r\n")
            # Noticing the client hang up at once keeps ``open`` true to the client's side.
            hung_up = asyncio.ensure_future(reader.read())
            if self.mode == "body":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                trickle = b"x" * 100000
            else:
                trickle = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100000
            for byte in trickle:
                writer.write(bytes([byte]))
                await writer.drain()
                self.bytes_trickled += 1
                done, _ = await asyncio.wait(
                    {hung_up, stopping}, timeout=1, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            stopping.cancel()
            if hung_up is not None:
                hung_up.cancel()
            writer.close()
            self._handlers.discard(task)

    async def close(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._handlers, return_exceptions=True)


@pytest.fixture
async def trickler(request: pytest.FixtureRequest) -> AsyncIterator[Trickler]:
    slow = Trickler(getattr(request, "param", "body"))
    server = await asyncio.start_server(slow.handle, "127.0.0.1", 0)
    slow.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    yield slow
    server.close()
    await slow.close()
    await server.wait_closed()


@pytest.fixture
async def notifier_factory() -> AsyncIterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(**kwargs: Any) -> Notifier:
        made.append(Notifier(**kwargs))
        return made[-1]

    yield make
    for notifier in made:
        await notifier.stop()


# payload: the Slack-compatible format is unchanged.


def test_payload_is_slack_compatible_with_structured_facts() -> None:
    assert notify.payload("ml-team", "run", "CapExceeded", "cap reached", 1234.567, 1000.0) == {
        "text": ":money_with_wings: TrainingBudget ml-team/run: cap reached "
        "($1,234.57 of $1,000.00, 123%)",
        "gpubudget": {
            "namespace": "ml-team",
            "budget": "run",
            "reason": "CapExceeded",
            "message": "cap reached",
            "spent": 1234.57,
            "cap": 1000.0,
        },
    }


def test_payload_with_zero_cap_shows_zero_share() -> None:
    result = notify.payload("ns", "b", "ThresholdReached", "m", 5.0, 0.0)
    assert result["text"].endswith("($5.00 of $0.00, 0%)")
    assert result["gpubudget"]["cap"] == 0.0


def test_requests_based_send_is_gone() -> None:
    assert not hasattr(notify, "send")


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        Notifier(max_queue=0)
    with pytest.raises(ValueError, match="max_queue"):
        Notifier(workers=0)
    with pytest.raises(ValueError, match="max_queue"):
        Notifier(deadline_seconds=0)


def test_redact_keeps_only_the_origin() -> None:
    assert notify.redact("https://hooks.slack.com/services/T0/B0/XYZ") == (
        "https://hooks.slack.com/..."
    )
    assert notify.redact("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert notify.redact("not a url") == "<invalid url>"


# Delivery.


async def test_receiver_gets_the_exact_json_body(
    receiver: Receiver, notifier_factory: Callable[..., Notifier]
) -> None:
    notifier = notifier_factory(deadline_seconds=2.0)
    await notifier.start()
    sent_before = metric("sent")
    expected = body(7)
    assert notifier.submit(receiver.url, expected)
    await wait_until(lambda: notifier.counts["sent"] == 1)
    assert receiver.bodies == [expected]
    assert receiver.content_types == ["application/json"]
    assert metric("sent") == sent_before + 1
    assert notifier.queue_depth == 0
    assert depth_gauge() == 0


async def test_error_status_is_failed_logged_and_counted_never_raised(
    receiver: Receiver, notifier_factory: Callable[..., Notifier]
) -> None:
    receiver.status = 500
    notifier = notifier_factory(deadline_seconds=2.0)
    await notifier.start()
    failed_before = metric("failed")
    with capture_logs() as logs:
        notifier.submit(receiver.url, body())
        await wait_until(lambda: notifier.counts["failed"] == 1)
    assert metric("failed") == failed_before + 1
    [line] = [line for line in logs if line["event"] == "notification failed"]
    assert line["reason"] == "http status"
    assert "500" in line["error"]
    assert line["url"].startswith("http://127.0.0.1:")
    assert "secret-token" not in repr(logs)  # the webhook's path is its secret
    assert notifier.running


async def test_refused_connection_is_failed_and_the_worker_carries_on(
    receiver: Receiver, notifier_factory: Callable[..., Notifier]
) -> None:
    closed = bound_socket()
    refused_url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    closed.close()
    notifier = notifier_factory(workers=1, deadline_seconds=2.0)
    await notifier.start()
    with capture_logs() as logs:
        notifier.submit(refused_url, body(1))
        notifier.submit("not a url", body(2))
        notifier.submit(receiver.url, body(3))
        await wait_until(lambda: notifier.counts["sent"] == 1)
    assert notifier.counts["failed"] == 2
    assert receiver.bodies == [body(3)]
    failures = [line for line in logs if line["event"] == "notification failed"]
    assert [line["url"] for line in failures] == [
        refused_url[: -len("hook")] + "...",
        "<invalid url>",
    ]
    assert all(line["error"] for line in failures)


@pytest.mark.parametrize("trickler", ["body", "headers"], indirect=True)
async def test_trickling_receiver_is_cut_off_at_the_deadline(
    trickler: Trickler, notifier_factory: Callable[..., Notifier]
) -> None:
    notifier = notifier_factory(workers=1, deadline_seconds=0.5)
    await notifier.start()
    timeouts_before = metric("timeout")
    with capture_logs() as logs:
        started = time.monotonic()
        notifier.submit(trickler.url, body())
        await wait_until(lambda: notifier.counts["timeout"] == 1, seconds=3.0)
        elapsed = time.monotonic() - started
    assert 0.45 <= elapsed <= 0.5 + 0.3
    assert trickler.bytes_trickled >= 1  # it did answer, just too slowly
    assert notifier.counts == {"sent": 0, "failed": 0, "timeout": 1, "dropped": 0}
    assert metric("timeout") == timeouts_before + 1
    [line] = [line for line in logs if line["event"] == "notification failed"]
    assert line["reason"] == "deadline exceeded"
    assert line["result"] == "timeout"
    await wait_until(lambda: trickler.open == 0)  # the connection was dropped, not pooled


async def test_64_trickling_sends_leave_the_loop_and_threads_free(
    trickler: Trickler, notifier_factory: Callable[..., Notifier]
) -> None:
    notifier = notifier_factory(workers=4, deadline_seconds=1.0)
    await notifier.start()
    threads_before = threading.active_count()

    submit_times = []
    for index in range(64):
        started = time.perf_counter()
        assert notifier.submit(trickler.url, body(index))
        submit_times.append(time.perf_counter() - started)
    assert max(submit_times) < 0.005  # never awaits, never blocks
    await wait_until(lambda: trickler.open == 4)
    await asyncio.sleep(0.3)  # still inside the 1 s deadline of the first four
    assert trickler.connections == 4  # in flight at once: no more than the workers
    assert notifier.queue_depth == 60
    assert depth_gauge() == 60
    # Sending takes no thread at all, so none from the pool the stops use.
    assert threading.active_count() == threads_before

    lags: list[float] = []

    async def ticker() -> None:
        for _ in range(30):
            started = time.monotonic()
            await asyncio.sleep(0.05)
            lags.append(time.monotonic() - started - 0.05)

    async def a_stop() -> float:
        # What suspending a workload looks like: a blocking call on the default pool.
        started = time.monotonic()
        await asyncio.to_thread(time.sleep, 0.01)
        return time.monotonic() - started

    ticking = asyncio.create_task(ticker())
    stop_times = [await a_stop() for _ in range(10)]
    stop_times += await asyncio.gather(*(a_stop() for _ in range(32)))
    await ticking

    assert max(lags) < 0.1
    assert max(stop_times) < 0.5
    assert notifier.counts["timeout"] >= 4  # the first round was cut off at 1 s
    assert notifier.queue_depth < 60


async def test_full_queue_drops_the_oldest(
    receiver: Receiver, notifier_factory: Callable[..., Notifier]
) -> None:
    notifier = notifier_factory(max_queue=3, workers=1, deadline_seconds=2.0)
    dropped_before = metric("dropped")
    with capture_logs() as logs:
        results = [notifier.submit(receiver.url, body(index)) for index in range(5)]
    assert results == [True, True, True, False, False]
    assert notifier.queue_depth == 3
    assert depth_gauge() == 3
    assert notifier.counts["dropped"] == 2
    assert metric("dropped") == dropped_before + 2
    assert [line["reason"] for line in logs] == ["queue full", "queue full"]

    await notifier.start()
    await wait_until(lambda: notifier.counts["sent"] == 3)
    assert receiver.bodies == [body(2), body(3), body(4)]  # the newest survive, in order
    assert notifier.queue_depth == 0


async def test_stop_cancels_cleanly_with_items_still_queued(
    trickler: Trickler, notifier_factory: Callable[..., Notifier]
) -> None:
    notifier = notifier_factory(workers=1, deadline_seconds=30.0)
    await notifier.start()
    for index in range(10):
        notifier.submit(trickler.url, body(index))
    await wait_until(lambda: trickler.open == 1)
    assert notifier.queue_depth == 9
    tasks = [task for task in asyncio.all_tasks() if task.get_name().startswith("gpu-budget")]
    assert len(tasks) == 1

    started = time.monotonic()
    await notifier.stop()
    assert time.monotonic() - started < 0.5
    assert all(task.done() for task in tasks)
    assert not notifier.running
    assert notifier.queue_depth == 0
    assert depth_gauge() == 0
    assert notifier.counts == {"sent": 0, "failed": 0, "timeout": 0, "dropped": 10}
    await wait_until(lambda: trickler.open == 0)  # the in-flight POST was abandoned

    await notifier.stop()  # idempotent
    assert not notifier.submit(trickler.url, body())
    assert notifier.counts["dropped"] == 11
    assert notifier.queue_depth == 0


async def test_stop_before_start_is_harmless() -> None:
    notifier = Notifier()
    await notifier.stop()
    await notifier.stop()
    assert not notifier.running


async def test_restart_after_stop_delivers_again(
    receiver: Receiver, notifier_factory: Callable[..., Notifier]
) -> None:
    notifier = notifier_factory(deadline_seconds=2.0)
    await notifier.start()
    await notifier.start()  # no-op when running
    assert notifier.running
    await notifier.stop()
    await notifier.start()
    assert notifier.submit(receiver.url, body())
    await wait_until(lambda: notifier.counts["sent"] == 1)


@contextlib.contextmanager
def default_pool_exhausted(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    release = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(pool)
    blocker = loop.run_in_executor(None, release.wait)
    try:
        yield
    finally:
        release.set()
        blocker.cancel()


async def test_host_names_resolve_without_the_default_pool(
    receiver: Receiver, notifier_factory: Callable[..., Notifier]
) -> None:
    notifier = notifier_factory(deadline_seconds=2.0)
    await notifier.start()
    url = receiver.url.replace("127.0.0.1", "localhost")
    with default_pool_exhausted(asyncio.get_running_loop()):
        assert notifier.submit(url, body())
        await wait_until(lambda: notifier.counts["sent"] + notifier.counts["failed"] == 1)
    assert notifier.counts["sent"] == 1
    assert receiver.bodies == [body()]
