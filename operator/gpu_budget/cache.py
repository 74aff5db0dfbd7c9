"""Watch-fed caches: what the accounting loop reads instead of asking the API server.

One list-then-watch per resource kind, on the event loop (aiohttp, no threads),
each object parsed once into the small facts the loop needs. Start-up costs one
paginated list per kind, linear in the objects listed; afterwards every change
costs one parse. (kopf's indices were measured to start in time that grows with
the square of the objects listed, from one readiness toggle per object: at 1,000
budgets and 5,000 pods the operator never finished starting.)

A watch that ends is resumed from its last resourceVersion; one the API server
no longer remembers (410 Gone) is listed again. Nothing here decides anything.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp
import kubernetes
import structlog

log = structlog.get_logger("gpu_budget.cache")

T = TypeVar("T")

PAGE_SIZE = 500
WATCH_SECONDS = 300
"""The API server ends each watch after this long; it is resumed at once."""
RETRY_SECONDS = 2.0
ABSENT_KIND_RETRY_SECONDS = 30.0
"""How often a kind that is not installed is listed again (its CRD may come later)."""


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: ``/api/v1/pods``, ``/apis/batch/v1/namespaces/x/jobs``."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    """Watch one namespace only (an operator serving a list of namespaces has no more
    rights); None for all namespaces, or a cluster-scoped kind."""

    @property
    def path(self) -> str:
        prefix = "/api" if not self.group else f"/apis/{self.group}"
        scope = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{prefix}/{self.version}{scope}/{self.plural}"


class ApiSession:
    """Authenticated HTTP to the API server, from the same configuration as the client."""

    def __init__(self) -> None:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        self._config = kubernetes.client.Configuration.get_default_copy()
        context = ssl.create_default_context(cafile=self._config.ssl_ca_cert)
        if not self._config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self._config.cert_file:
            context.load_cert_chain(self._config.cert_file, self._config.key_file)
        self._ssl = context
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    def headers(self) -> dict[str, str]:
        # Calls the in-cluster token refresh hook: a rotated token is picked up.
        token = self._config.get_api_key_with_prefix("BearerToken")
        return {"Accept": "application/json", **({"Authorization": token} if token else {})}

    def url(self, path: str) -> str:
        return str(self._config.host).rstrip("/") + path

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> None:
        """A JSON merge patch; the object sent back is read but not parsed (nobody needs it).

        Read to the end: aiohttp closes, rather than reuses, a connection whose answer was
        left unread, and a new TLS handshake per write was a tenth of the operator's CPU.
        """
        async with self.session.patch(
            self.url(path),
            data=json.dumps(body),
            headers={**self.headers(), "Content-Type": "application/merge-patch+json"},
        ) as response:
            answer = await response.read()
            if response.status >= 400:
                raise ApiError(response.status, answer[:1000].decode(errors="replace"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class ApiError(Exception):
    """The API server refused a request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Gone(Exception):
    """The resourceVersion is too old for the API server: list again."""


@dataclass
class Cache(Generic[T]):
    """The parsed objects of one kind, by uid, kept current by a watch."""

    resource: Resource
    parse: Callable[[Mapping[str, Any]], T | None]
    """Object -> facts; None to keep nothing of it (not interesting)."""
    items: dict[str, T] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    on_delete: Callable[[Mapping[str, Any]], None] | None = None
    """Called with the last state of each deleted object (a pod's deletion time, a budget's
    last status)."""
    on_change: Callable[[Mapping[str, Any]], None] | None = None
    """Called with every object added or changed by a watch event (to wake the loop)."""
    events: int = 0

    def __iter__(self) -> Iterator[T]:
        return iter(self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def _parsed(self, obj: Mapping[str, Any]) -> tuple[str, T | None]:
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        try:
            return uid, self.parse(obj)
        except Exception as error:  # one bad object must not end the watch
            log.error("unparsable object", resource=self.resource.path, uid=uid, error=str(error))
            return uid, None

    def _store(self, obj: Mapping[str, Any]) -> None:
        uid, facts = self._parsed(obj)
        if facts is None:
            self.items.pop(uid, None)
        else:
            self.items[uid] = facts

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event."""
        self.events += 1
        if event_type == "DELETED":
            self.items.pop(str((obj.get("metadata") or {}).get("uid", "")), None)
            if self.on_delete is not None:
                self.on_delete(obj)
        elif event_type in ("ADDED", "MODIFIED"):
            self._store(obj)
            if self.on_change is not None:
                self.on_change(obj)

    def replace(self, items: dict[str, T]) -> None:
        """A full listing, parsed; objects missing from it were deleted while nobody watched."""
        gone = set(self.items) - set(items)
        self.items = items
        if self.on_delete is not None:
            for uid in gone:
                self.on_delete({"metadata": {"uid": uid}})

    async def run(self, api: ApiSession) -> None:
        """List, then watch for ever; relist when the watch's version is gone."""
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list(api)
                    self.ready.set()
                version = await self._watch(api, version)
            except Gone:
                version = None
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("watch failed; retrying", resource=self.resource.path, error=str(error))
                await asyncio.sleep(RETRY_SECONDS)

    async def _list(self, api: ApiSession) -> str:
        # Each page is parsed as it arrives and its bodies dropped: the peak memory of a
        # start is one page of bodies plus the facts, not every body of the kind at once.
        items: dict[str, T] = {}
        listed = 0
        token: str | None = None
        version = ""
        while True:
            params = {"limit": str(PAGE_SIZE), **({"continue": token} if token else {})}
            async with api.session.get(
                api.url(self.resource.path), params=params, headers=api.headers()
            ) as response:
                if response.status == 410:
                    raise Gone()
                if response.status == 404:
                    # The kind is not installed (no JobSet CRD): there is nothing of it, so
                    # the cache is ready, and it looks again in a while.
                    self.replace({})
                    self.ready.set()
                    await asyncio.sleep(ABSENT_KIND_RETRY_SECONDS)
                    raise Gone()
                response.raise_for_status()
                page = json.loads(await response.read())
            for obj in page.pop("items", None) or []:
                listed += 1
                uid, facts = self._parsed(obj)
                if facts is not None:
                    items[uid] = facts
            meta = page.get("metadata") or {}
            version = str(meta.get("resourceVersion", ""))
            token = meta.get("continue") or None
            if not token:
                break
        self.replace(items)
        log.info("listed", resource=self.resource.path, objects=listed, kept=len(self))
        return version

    async def _watch(self, api: ApiSession, version: str) -> str:
        params = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async with api.session.get(
            api.url(self.resource.path), params=params, headers=api.headers()
        ) as response:
            if response.status == 410:
                raise Gone()
            response.raise_for_status()
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        version = self._event(json.loads(line), version)
        return version

    def _event(self, event: Mapping[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch error: {obj.get('message')}")
        new_version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind != "BOOKMARK":
            self.apply(str(kind), obj)
        return new_version
