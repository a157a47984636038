"""The store: the on-disk cache and the only reader and writer of its files.

Layout (the spec's, made safe)::

    <root>/registry.json        index of installed models (derived; rebuilt from the dirs)
    <root>/.lock                cross-process lock for registry changes and eviction
    <root>/.inuse/              one lease file per process using a model
    <root>/.graphs/<name>/      graphs the runtime derived from a model (counted with it)
    <root>/downloads/           staging dirs, resumable parts
    <root>/<name>/              files at their repo paths
    <root>/<name>/.caxton_metadata
    <root>/<name>/.caxton_checksum
    <root>/.upstream/<owner>--<name>.json   what a pull-through mirror learned upstream

Modules: ``_records`` (schemas), ``_fs`` (file primitives), ``_lock``,
``_leases`` (in-use leases, access counts), ``_recovery`` (crash leftovers),
``_limits`` (:class:`CacheLimits`, what the eviction rule reads), ``_evict``
(the eviction plan), ``_graphs`` (the graph cache), ``_upstream``
(a mirror's refs and listings), ``_finalize`` (a staged folder's manifest and
metadata), ``_revisions`` (the :class:`RevisionStore`, which takes the cache
lock itself) under ``_cache_revisions`` (publish, switch, rollback), ``_cache``
(the :class:`ModelCache` facade composing them). The store enforces no model policy:
what may be installed is decided in :mod:`caxton_models.acquire`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caxton_models._lazy import lazy_exports

if TYPE_CHECKING:
    from caxton_models.store._cache import DOWNLOADS, LOCK_FILE, REGISTRY_FILE, ModelCache
    from caxton_models.store._evict import plan_eviction
    from caxton_models.store._fs import (
        DIR_MODE,
        FILE_MODE,
        NEW_FILE_FLAGS,
        READ_FLAGS,
        boot_id,
        copy_nofollow,
        fsync_dir,
        open_regular,
        read_json_nofollow,
        rmtree,
        walk_files,
        write_json_atomic,
    )
    from caxton_models.store._graphs import GRAPHS, GraphCache, graph_dir_for, publish_graph
    from caxton_models.store._leases import INUSE
    from caxton_models.store._limits import CacheLimits
    from caxton_models.store._live import LIVE, owner_token
    from caxton_models.store._lock import FileLock
    from caxton_models.store._read import folder_revision, read_installed
    from caxton_models.store._records import (
        CHECKSUM_FILE,
        METADATA_FILE,
        SCHEMA_VERSION,
        FileEntry,
        InstalledModel,
        Metadata,
        NewerSchema,
        format_time,
        is_hex,
        manifest_json,
        now_utc,
        parse_manifest,
        parse_time,
    )
    from caxton_models.store._upstream import UPSTREAM, ListedFile, RefRecord, UpstreamRecords

# Each name loads its module on first use: a load() of a model that ships ONNX reads
# a few records and the graph cache, and never pays for the publish, revision,
# eviction and recovery machinery behind ModelCache.
__getattr__ = lazy_exports(
    __name__,
    {
        "DOWNLOADS": "caxton_models.store._cache",
        "LOCK_FILE": "caxton_models.store._cache",
        "REGISTRY_FILE": "caxton_models.store._cache",
        "ModelCache": "caxton_models.store._cache",
        "plan_eviction": "caxton_models.store._evict",
        "DIR_MODE": "caxton_models.store._fs",
        "FILE_MODE": "caxton_models.store._fs",
        "NEW_FILE_FLAGS": "caxton_models.store._fs",
        "READ_FLAGS": "caxton_models.store._fs",
        "boot_id": "caxton_models.store._fs",
        "copy_nofollow": "caxton_models.store._fs",
        "fsync_dir": "caxton_models.store._fs",
        "open_regular": "caxton_models.store._fs",
        "read_json_nofollow": "caxton_models.store._fs",
        "rmtree": "caxton_models.store._fs",
        "walk_files": "caxton_models.store._fs",
        "write_json_atomic": "caxton_models.store._fs",
        "GRAPHS": "caxton_models.store._graphs",
        "GraphCache": "caxton_models.store._graphs",
        "graph_dir_for": "caxton_models.store._graphs",
        "publish_graph": "caxton_models.store._graphs",
        "INUSE": "caxton_models.store._leases",
        "CacheLimits": "caxton_models.store._limits",
        "LIVE": "caxton_models.store._live",
        "owner_token": "caxton_models.store._live",
        "FileLock": "caxton_models.store._lock",
        "folder_revision": "caxton_models.store._read",
        "read_installed": "caxton_models.store._read",
        "CHECKSUM_FILE": "caxton_models.store._records",
        "METADATA_FILE": "caxton_models.store._records",
        "SCHEMA_VERSION": "caxton_models.store._records",
        "FileEntry": "caxton_models.store._records",
        "InstalledModel": "caxton_models.store._records",
        "Metadata": "caxton_models.store._records",
        "NewerSchema": "caxton_models.store._records",
        "format_time": "caxton_models.store._records",
        "is_hex": "caxton_models.store._records",
        "manifest_json": "caxton_models.store._records",
        "now_utc": "caxton_models.store._records",
        "parse_manifest": "caxton_models.store._records",
        "parse_time": "caxton_models.store._records",
        "UPSTREAM": "caxton_models.store._upstream",
        "ListedFile": "caxton_models.store._upstream",
        "RefRecord": "caxton_models.store._upstream",
        "UpstreamRecords": "caxton_models.store._upstream",
    },
)

__all__ = [
    "CHECKSUM_FILE",
    "DIR_MODE",
    "DOWNLOADS",
    "FILE_MODE",
    "GRAPHS",
    "INUSE",
    "LIVE",
    "LOCK_FILE",
    "METADATA_FILE",
    "NEW_FILE_FLAGS",
    "READ_FLAGS",
    "REGISTRY_FILE",
    "SCHEMA_VERSION",
    "UPSTREAM",
    "CacheLimits",
    "FileEntry",
    "FileLock",
    "GraphCache",
    "InstalledModel",
    "ListedFile",
    "Metadata",
    "ModelCache",
    "NewerSchema",
    "RefRecord",
    "UpstreamRecords",
    "boot_id",
    "copy_nofollow",
    "folder_revision",
    "format_time",
    "fsync_dir",
    "graph_dir_for",
    "is_hex",
    "manifest_json",
    "now_utc",
    "open_regular",
    "owner_token",
    "parse_manifest",
    "parse_time",
    "plan_eviction",
    "publish_graph",
    "read_installed",
    "read_json_nofollow",
    "rmtree",
    "walk_files",
    "write_json_atomic",
]
