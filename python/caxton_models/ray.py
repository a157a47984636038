"""Embedding on Ray Data: one model per actor, loaded through the node's cache.

::

    import ray
    from caxton_models.ray import Embed

    ds = ray.data.read_text("s3://bucket/docs/")            # a "text" column
    ds = ds.map_batches(
        Embed,
        fn_constructor_kwargs={"model": "all-MiniLM-L6-v2"},
        concurrency=8,      # actors; each loads the model once
        batch_size=1024,
    )
    ds.write_parquet("s3://bucket/vectors/")

Each actor calls :func:`caxton_models.load` once, in its constructor: the
model comes from that node's cache (``CAXTON_CACHE_DIR``), downloaded there
on first use from the configured endpoint (``HF_ENDPOINT``: point every node
at one ``caxton model serve`` mirror) or found in a shared cache folder.
Actors on one node share the cache and its lock, so a node downloads and
verifies the files once, however many actors it runs.

A batch may come as a dict of numpy arrays (Ray's default), a pandas
DataFrame or a pyarrow Table. The result is a pyarrow Table with the batch's
columns in their order and its rows in their order, plus:

* ``embedding``: ``fixed_size_list<float32>[dimensions]``;
* ``model_id`` and ``model_revision`` (strings; the revision is null for a
  model without a recorded commit), so that vectors from different models
  (different spaces) can be told apart downstream.

Ray is not a dependency of this module: ``pip install 'caxton-models[ray]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from caxton_models.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from caxton_models.runtime.embedder import Embedder

__all__ = ["Embed"]


class Embed:
    """A callable class for ``Dataset.map_batches`` (see the module doc).

    ``model`` is what :func:`caxton_models.load` takes (a registry name or a
    folder); ``column`` names the text column; ``kind`` is ``"passage"`` or
    ``"query"``; other keyword arguments go to ``load`` (``threads``,
    ``quantize``, ...). Threads default to the CPUs Ray gave the actor
    (``num_cpus``), at least one.
    """

    def __init__(
        self,
        model: str,
        *,
        column: str = "text",
        output_column: str = "embedding",
        kind: str = "passage",
        normalize: bool | None = None,
        **load_options: Any,
    ) -> None:
        if kind not in ("passage", "query"):
            raise ConfigError(f"kind must be 'passage' or 'query', not {kind!r}", key="kind")
        taken = {"model_id", "model_revision", column}
        if output_column in taken:
            raise ConfigError(
                f"output_column {output_column!r} would overwrite the column of the same name: "
                "pick another name",
                key="output_column",
            )
        from caxton_models._load import load

        load_options.setdefault("threads", _actor_cpus())
        self.column = column
        self.output_column = output_column
        self.kind = kind
        self.normalize = normalize
        self.embedder: Embedder = load(model, **load_options)

    def __call__(self, batch: Any) -> pa.Table:
        import pyarrow as pa

        table = _to_arrow(batch)
        if self.column not in table.column_names:
            raise ConfigError(
                f"the batch has no column {self.column!r} (it has {table.column_names}): "
                "pass Embed's column= the name of the text column",
                key="column",
            )
        texts = table.column(self.column).to_pylist()
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(
                    f"row {i} of column {self.column!r} is {type(t).__name__}, expected str: "
                    "filter out nulls and non-text rows before embedding"
                )
        vecs = self.embedder.embed(texts, kind=self.kind, normalize=self.normalize)  # type: ignore[arg-type]
        emb = self.embedder
        n = len(texts)
        flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1), pa.float32())
        table = table.append_column(
            self.output_column, pa.FixedSizeListArray.from_arrays(flat, emb.dimensions)
        )
        table = table.append_column("model_id", pa.array([emb.model_id] * n, pa.string()))
        return table.append_column("model_revision", pa.array([emb.revision] * n, pa.string()))


def _actor_cpus() -> int:
    """The CPUs Ray reserved for this actor (1 outside Ray or when fractional)."""
    try:
        import ray

        if not ray.is_initialized():  # asking the runtime context would start a local Ray
            return 1
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    except Exception:  # not in a Ray worker, or an older Ray: one thread per actor
        return 1
    return max(1, int(cpus))


def _to_arrow(batch: Any) -> pa.Table:
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):
        return pa.table({name: _numpy_column(name, col) for name, col in batch.items()})
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - Ray Data depends on pandas
        pd = None
    if pd is not None and isinstance(batch, pd.DataFrame):
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise TypeError(
        f"cannot embed a batch of type {type(batch).__name__}: Embed takes a dict of numpy "
        "arrays, a pandas DataFrame or a pyarrow Table (map_batches' batch_format)"
    )


def _numpy_column(name: str, col: Any) -> pa.Array:
    import pyarrow as pa

    arr = np.asarray(col)
    if arr.ndim == 1:
        return pa.array(arr.tolist() if arr.dtype == object else arr)
    if arr.ndim == 2 and arr.dtype.kind in "biuf":
        return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])
    raise TypeError(
        f"column {name!r} has shape {arr.shape} and dtype {arr.dtype}: Embed passes through "
        "1-D columns and 2-D numeric ones; drop or flatten the others before map_batches"
    )
