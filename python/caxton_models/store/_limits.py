"""What the eviction rule reads, as one value: the cache's limits, the
policy, the free-space reserve and the pinned names.

The store defines the value and applies it; it never builds it. Which
numbers and names go in is policy (the configuration's ``model_cache``
section), decided above the store by :func:`caxton_models.acquire._upkeep.cache_limits`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from caxton_models.errors import InvalidArgument
from caxton_models.store._records import InstalledModel

#: The eviction policies; ``manual`` never evicts.
POLICIES = ("lru", "fifo", "manual")

#: Free space kept on the cache's file system beyond what a download needs
#: (metadata, manifests and the index are written after the bytes).
DISK_RESERVE = 16 << 20


@dataclass(frozen=True)
class CacheLimits:
    """The limits one cache is held to. ``None`` means no limit; ``pinned``
    names models eviction and cleanup must keep whatever the limits say.
    The default value limits nothing and pins nothing."""

    max_bytes: int | None = None
    max_models: int | None = None
    pinned: frozenset[str] = field(default_factory=frozenset)
    policy: str = "lru"
    reserve_bytes: int = DISK_RESERVE

    def __post_init__(self) -> None:
        for key in ("max_bytes", "max_models"):
            value = getattr(self, key)
            if value is not None and (_not_int(value) or value < 0):
                raise InvalidArgument(
                    f"CacheLimits.{key} must be a non-negative integer or None, not {value!r}"
                )
        if _not_int(self.reserve_bytes) or self.reserve_bytes < 0:
            raise InvalidArgument(
                f"CacheLimits.reserve_bytes must be a non-negative integer, "
                f"not {self.reserve_bytes!r}"
            )
        if self.policy not in POLICIES:
            raise InvalidArgument(
                f"CacheLimits.policy {self.policy!r} is not one of {', '.join(POLICIES)}"
            )
        # A bare string is iterable too: "mini" would pin "m", "i" and "n".
        pinned: object = self.pinned
        if isinstance(pinned, (str, bytes)) or not isinstance(pinned, Iterable):
            raise InvalidArgument(
                f"CacheLimits.pinned must be a collection of model names, not {pinned!r}"
            )
        names = frozenset(pinned)
        if not all(isinstance(n, str) for n in names):
            raise InvalidArgument(
                f"CacheLimits.pinned holds a non-string name: {sorted(map(repr, names))}"
            )
        object.__setattr__(self, "pinned", names)

    @property
    def bounded(self) -> bool:
        """Whether a size or count limit applies at all."""
        return self.max_bytes is not None or self.max_models is not None

    def keeps(self, model: InstalledModel) -> bool:
        """Whether ``model`` is pinned: named in ``pinned``, or pinned on this
        cache (``ModelCache.set_pinned``, a fact of the cache, not a copy of
        the configuration). The one rule every eviction and cleanup path reads."""
        return model.name in self.pinned or model.pinned

    def unbounded(self) -> CacheLimits:
        """The same policy, pins and reserve without the size and count limits:
        what freeing disk space (rather than enforcing the limits) evicts by."""
        return replace(self, max_bytes=None, max_models=None)


def _not_int(value: object) -> bool:
    return not isinstance(value, int) or isinstance(value, bool)
