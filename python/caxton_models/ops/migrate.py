"""Re-embed a corpus with a new model or revision: in batches, resumable
after a kill, and compared with the old vectors on a sample at the end.

The output is a ``.npy`` file of shape (texts, dimensions), float32, written
through a memory map; ``<output>.state.json`` says how many batches are
finished (rewritten atomically after each batch is flushed). A run killed at
any point resumes from the first unfinished batch: a batch is at worst
embedded twice, never skipped. The state also records the new model, its
revision and a fingerprint of the corpus, so a resume with another model or
corpus is refused rather than mixing two embedding spaces in one file.

Nothing here touches the cache: the old model stays current and usable
while the corpus is re-embedded, and the operator switches (``caxton model
update``) and cleans up (``caxton model gc``) after reading the comparison.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caxton_models.errors import MigrationError
from caxton_models.store import read_json_nofollow, write_json_atomic

if TYPE_CHECKING:
    from caxton_models.config import Config
    from caxton_models.runtime.embedder import Embedder

__all__ = ["MigrationReport", "migrate", "neighbour_overlap"]

STATE_VERSION = 1


@dataclass(frozen=True)
class MigrationReport:
    output: str
    texts: int
    dimensions: int
    batches: int
    batches_run: int  # embedded by this call
    batches_skipped: int  # finished by an earlier, interrupted call
    model: str
    revision: str | None
    old_model: str | None
    sample: int
    k: int
    overlap_mean: float | None  # of each sampled text's k nearest neighbours, old vs new
    overlap_min: float | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> Iterator[str]:
        yield (
            f"re-embedded {self.texts} texts with {self.model}@{self.revision or '-'} into "
            f"{self.output} ({self.dimensions} dimensions): {self.batches_run} batches now, "
            f"{self.batches_skipped} already done of {self.batches}, in {self.seconds:.1f} s"
        )
        if self.overlap_mean is None:
            yield "no comparison (no old model or vectors, or sample 0)"
        else:
            yield (
                f"nearest-neighbour overlap with {self.old_model} on {self.sample} texts "
                f"(top {self.k}): mean {self.overlap_mean:.3f}, min {self.overlap_min:.3f}"
            )


class _Corpus:
    """A text file (one text per line) or texts in memory, read in batches."""

    def __init__(self, texts: str | os.PathLike[str] | Iterable[str]) -> None:
        self.path: Path | None = None
        self.items: Sequence[str] = ()
        if isinstance(texts, (str, os.PathLike)):
            self.path = Path(texts)
            if not self.path.is_file():
                raise MigrationError(f"corpus {self.path} is not a file (one text per line)")
            self.total = sum(1 for _ in self._lines())
        else:
            # An iterator is read once into memory: a resume must see the same texts.
            self.items = texts if isinstance(texts, Sequence) else list(texts)
            self.total = len(self.items)
        if self.total == 0:
            raise MigrationError("the corpus is empty: nothing to re-embed")

    def _lines(self) -> Iterator[str]:
        assert self.path is not None
        with open(self.path, encoding="utf-8", newline="") as f:
            for line in f:
                yield line.rstrip("\r\n")

    def texts(self, start: int = 0) -> Iterator[str]:
        if self.path is not None:
            return itertools.islice(self._lines(), start, None)
        return iter(self.items[start:])

    def batches(self, size: int, first: int) -> Iterator[list[str]]:
        it = self.texts(first * size)
        while batch := list(itertools.islice(it, size)):
            yield batch

    def fingerprint(self, size: int) -> str:
        h = hashlib.sha256(str(self.total).encode())
        for t in itertools.islice(self.texts(), size):
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()

    def pick(self, indices: Sequence[int]) -> list[str]:
        wanted = set(indices)
        return [t for i, t in enumerate(self.texts()) if i in wanted]


def _embedder(model: str | os.PathLike[str] | Embedder, config: Config | None) -> Embedder:
    if not isinstance(model, (str, os.PathLike)):
        return model
    from caxton_models._load import load

    # Never a fallback: vectors of a stand-in model in this file would be wrong.
    return load(model, config=config, fallback=False)


def neighbour_overlap(old: np.ndarray, new: np.ndarray, k: int = 10) -> np.ndarray:
    """For each row, the share of its ``k`` nearest neighbours (cosine, among
    the rows) that old and new vectors agree on."""
    n = old.shape[0]
    k = min(k, n - 1)
    if k < 1:
        raise MigrationError("the comparison needs at least 2 texts in the sample")

    def knn(x: np.ndarray) -> np.ndarray:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return np.argpartition(-sim, k - 1, axis=1)[:, :k]

    a, b = knn(old.astype(np.float32)), knn(new.astype(np.float32))
    return np.array([len(set(a[i]) & set(b[i])) / k for i in range(n)], dtype=np.float64)


def _open_output(
    output: Path, state_file: Path, expect: dict[str, Any], shape: tuple[int, int]
) -> tuple[np.memmap[Any, Any], int]:
    """The output memory map and the number of finished batches (a new run,
    or a resume whose state matches ``expect``)."""
    done = 0
    if state_file.exists():
        try:
            state = read_json_nofollow(state_file)
        except (OSError, ValueError) as e:
            raise MigrationError(
                f"{state_file} is unreadable ({e}); delete it and {output} to start over",
                state_file=str(state_file),
            ) from None
        if not isinstance(state, dict):
            state = {}
        differs = [k for k, v in expect.items() if state.get(k) != v]
        if differs:
            raise MigrationError(
                f"{output} was started with another {', '.join(differs)} (see {state_file}); "
                "resume with the same corpus, model and batch size, or choose another output",
                state_file=str(state_file),
            )
        done = int(state.get("done_batches", 0))
        if not output.exists() and done:
            raise MigrationError(f"{output} is gone but {state_file} says {done} batches "
                                 "are done; delete the state file to start over",
                                 state_file=str(state_file))  # fmt: skip
    elif output.exists():
        raise MigrationError(
            f"{output} exists and no {state_file.name} says it is a migration's output; "
            "refusing to overwrite it (remove it or pick another output)",
            state_file=str(state_file),
        )
    else:
        write_json_atomic(state_file, {**expect, "done_batches": 0})
    if not output.exists():
        output.parent.mkdir(parents=True, exist_ok=True)
        mm = np.lib.format.open_memmap(output, mode="w+", dtype=np.float32, shape=shape)
    else:
        mm = np.lib.format.open_memmap(output, mode="r+")
        if mm.shape != shape or mm.dtype != np.float32:
            raise MigrationError(f"{output} holds {mm.shape} {mm.dtype}, not {shape} float32",
                                 state_file=str(state_file))  # fmt: skip
    return mm, done


def migrate(
    texts: str | os.PathLike[str] | Iterable[str],
    *,
    new: str | os.PathLike[str] | Embedder,
    output: str | os.PathLike[str],
    old: str | os.PathLike[str] | Embedder | None = None,
    old_vectors: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    sample: int = 1000,
    k: int = 10,
    seed: int = 0,
    progress: Callable[[int, int], object] | None = None,
    config: Config | None = None,
) -> MigrationReport:
    """Re-embed ``texts`` (a file of one text per line, or the texts) with
    ``new`` (a registry name, a folder, or an Embedder) into ``output``
    (.npy). Resumes an interrupted run of the same corpus and model. Then
    compares with ``old_vectors`` (a .npy in the corpus's order) or the
    ``old`` model on ``sample`` texts: the overlap of each one's ``k``
    nearest neighbours. ``progress(done_texts, total)`` after each batch."""
    if batch_size < 1 or sample < 0:
        raise MigrationError("batch_size must be at least 1 and sample at least 0")
    started = time.monotonic()
    corpus = _Corpus(texts)
    emb = _embedder(new, config)
    out = Path(output)
    state_file = out.with_name(out.name + ".state.json")
    expect = {
        "version": STATE_VERSION, "texts": corpus.total, "batch_size": batch_size,
        "dimensions": emb.dimensions, "model": emb.model_id, "revision": emb.revision,
        "corpus": corpus.fingerprint(batch_size),
    }  # fmt: skip
    mm, done = _open_output(out, state_file, expect, (corpus.total, emb.dimensions))
    batches = -(-corpus.total // batch_size)
    ran = 0
    for b, batch in enumerate(corpus.batches(batch_size, done), start=done):
        start = b * batch_size
        mm[start : start + len(batch)] = emb.embed(batch)
        mm.flush()  # the vectors are on disk before the state says so
        write_json_atomic(state_file, {**expect, "done_batches": b + 1})
        ran += 1
        if progress is not None:
            progress(min(start + len(batch), corpus.total), corpus.total)
    overlap, old_name, n = _compare(corpus, mm, old, old_vectors, sample, seed, k, config)
    return MigrationReport(
        output=str(out), texts=corpus.total, dimensions=emb.dimensions, batches=batches,
        batches_run=ran, batches_skipped=done, model=emb.model_id, revision=emb.revision,
        old_model=old_name, sample=n, k=min(k, max(n - 1, 0)),
        overlap_mean=float(overlap.mean()) if overlap is not None else None,
        overlap_min=float(overlap.min()) if overlap is not None else None,
        seconds=time.monotonic() - started,
    )  # fmt: skip


def _compare(
    corpus: _Corpus,
    new_vectors: np.ndarray,
    old: str | os.PathLike[str] | Embedder | None,
    old_vectors: str | os.PathLike[str] | None,
    sample: int,
    seed: int,
    k: int,
    config: Config | None,
) -> tuple[np.ndarray | None, str | None, int]:
    if sample == 0 or (old is None and old_vectors is None):
        return None, None, 0
    n = min(sample, corpus.total)
    idx = np.sort(np.random.default_rng(seed).choice(corpus.total, n, replace=False))
    if old_vectors is not None:
        stored = np.load(old_vectors, mmap_mode="r")
        if stored.ndim != 2 or stored.shape[0] != corpus.total:
            raise MigrationError(f"{old_vectors} has shape {stored.shape}: it needs one row "
                                 f"per text ({corpus.total})")  # fmt: skip
        before, name = np.asarray(stored[idx]), str(old_vectors)
    else:
        assert old is not None
        old_emb = _embedder(old, config)
        before, name = old_emb.embed(corpus.pick(idx.tolist())), old_emb.model_id
    return neighbour_overlap(before, np.asarray(new_vectors[idx]), k), name, n
