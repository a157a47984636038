"""Network state and the Hub client: whether this process may use the
network at all, and the one client it shares when it may.

Offline (``CAXTON_OFFLINE`` / ``HF_HUB_OFFLINE`` / ``download.enabled: false``)
means no client is ever built, so no network call can happen.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from caxton_models.acquire._fetch import HubLike
from caxton_models.config import Config
from caxton_models.errors import OfflineError


class Network:
    """Built from the config (offline switches, endpoints, download limits);
    ``hub``: a client to use instead of building one, ``factory``: what builds
    one (tests pass a fake hub's)."""

    def __init__(
        self,
        config: Config,
        *,
        hub: HubLike | None = None,
        factory: Callable[..., HubLike] | None = None,
    ) -> None:
        self.config = config
        self._hub = hub
        self._factory = factory
        self._mutex = threading.Lock()

    def offline_reason(self) -> str | None:
        """Why the network must not be used, or None when it may."""
        if self.config.offline:
            return "offline mode is on (CAXTON_OFFLINE / HF_HUB_OFFLINE)"
        if not self.config.download.enabled:
            return "downloads are disabled (download.enabled: false)"
        return None

    def new_client(self, **overrides: Any) -> HubLike:
        """A fresh client with the config's limits (``overrides`` win)."""
        reason = self.offline_reason()
        if reason:  # never even construct a client: zero network calls
            raise OfflineError(f"no network access: {reason}", reason=reason)
        dl = self.config.download
        kwargs: dict[str, Any] = {
            "token": self.config.token,
            "offline": False,
            "timeout": dl.request_timeout,
            "retries": dl.retry_attempts,
            "retry_delay": dl.retry_delay_ms / 1000.0,
            # Always passed: the config's default is the engine's, stated.
            "chunk_size": dl.chunk_size_kb * 1024,
        }
        if dl.connection_budget is not None:
            kwargs["connections"] = dl.connection_budget
        kwargs.update(overrides)
        if self._factory is not None:
            return self._factory(list(self.config.endpoints), **kwargs)
        from caxton_models.acquire.hub import HubClient

        return HubClient(list(self.config.endpoints), **kwargs)  # type: ignore[no-any-return,unused-ignore]

    @property
    def hub(self) -> HubLike:
        """The shared client, built on first use; OfflineError when offline."""
        with self._mutex:
            if self._hub is None:
                self._hub = self.new_client()
            elif self.offline_reason():
                raise OfflineError(f"no network access: {self.offline_reason()}")
            return self._hub

    def check_client(self) -> HubLike:
        """The client for a background update check: the shared one when it
        exists, else one short, single attempt (a slow or rate-limited Hub
        delays nothing)."""
        with self._mutex:
            shared = self._hub
        if shared is not None:
            return shared
        return self.new_client(retries=1, timeout=min(10.0, self.config.download.request_timeout))


class ModelLocks:
    """One lock per model name, for this process: two threads never download,
    repair or switch the same model at once."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._mutex = threading.Lock()

    def hold(self, name: str) -> threading.Lock:
        with self._mutex:
            return self._locks.setdefault(name, threading.Lock())
