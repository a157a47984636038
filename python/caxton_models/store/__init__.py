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
``_evict`` (the eviction plan), ``_graphs`` (the graph cache), ``_upstream``
(a mirror's refs and listings), ``_finalize`` (a staged folder's manifest and
metadata), ``_revisions`` (the :class:`RevisionStore`, which takes the cache
lock itself) under ``_cache_revisions`` (publish, switch, rollback), ``_cache``
(the :class:`ModelCache` facade composing them). The store enforces no model policy:
what may be installed is decided in :mod:`caxton_models.acquire`.
"""

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
