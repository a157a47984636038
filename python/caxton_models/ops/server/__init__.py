"""``caxton model serve``: a mirror that speaks the Hugging Face Hub's HTTP protocol.

One machine downloads models into its caxton cache (or fetches them on demand from an
upstream: the Hub or another mirror); a team points ``HF_ENDPOINT`` (or caxton's mirror
list) at this server, and every Hub client -- huggingface_hub, transformers, caxton
itself -- downloads from it as from the Hub. See ``HUB-PROTOCOL.md`` for what clients
send and expect. Modules, one job each:

- :mod:`.catalog`: what is offered (snapshots by repo and commit, refs, the files'
  hashes), built from a cache or a folder of repos;
- :mod:`.handlers`: the Hub's routes; :mod:`.sendfile`: a file's bytes, ranges;
- :mod:`.pullthrough`: misses fetched upstream through the verified download path;
- :mod:`.access`: allow/deny lists and the bearer token;
- :mod:`.options`: settings and the Hub's error shape; :mod:`.running`: threads, TLS.
"""

from caxton_models.ops.server.access import AccessRules, read_tokens
from caxton_models.ops.server.catalog import (
    MINILM_COMMIT,
    MINILM_REPO_ID,
    Catalog,
    CatalogError,
    ServedFile,
    Snapshot,
)
from caxton_models.ops.server.handlers import make_app
from caxton_models.ops.server.options import ServeOptions, Upstream
from caxton_models.ops.server.running import ServerThread, serve, tls_context

__all__ = [
    "MINILM_COMMIT",
    "MINILM_REPO_ID",
    "AccessRules",
    "Catalog",
    "CatalogError",
    "ServeOptions",
    "ServedFile",
    "ServerThread",
    "Snapshot",
    "Upstream",
    "make_app",
    "read_tokens",
    "serve",
    "tls_context",
]
