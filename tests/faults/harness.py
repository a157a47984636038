"""The fault matrix's harness: a sandbox per scenario run, and the checks of
invariants I1-I6 (RELIABILITY.md) that every scenario gets for free.

A scenario is a function ``f(ctx: Ctx) -> None`` registered with
:func:`scenario`. It builds its inputs, calls ``ctx.begin()`` (the sandbox
snapshot), breaks something, asserts the row's own expectations, and usually
ends with a recovery run. After it returns, the harness counts:

- corrupted entries (I1): a model marked verified whose bytes do not hash to
  its manifest;
- writes outside the cache (I2): any path of the sandbox outside the cache
  root and ``out/`` created, deleted or changed since ``begin()`` (path,
  type, size, mtime, inode), and the canary folder's bytes;
- changed complete entries (I3): entries ``ctx.protect()``-ed before the fault;
- panics (I4): an exception that is not a ``CaxtonError`` escaping an
  operation, or "panicked" in any captured output;
- leaked secrets (I5): the sentinel token in any log record, exception str,
  repr or traceback, child output, metrics exposition, or any file of the
  sandbox (the cache included);
- leftover temp files (I6): anything left in ``downloads/`` (locks aside),
  and any ``.part``, ``.tmp``, staging, old or trash name in the cache.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caxton_models import _core
from caxton_models.errors import CaxtonError

SENTINEL = "hf_SENTINELfaultMatrix7Q2x9K4pLm3Zt8Wv"
REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ registry of scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    rows: tuple[int, ...]
    fn: Callable[[Ctx], None]
    heavy: bool  # the reps command runs the full variant; the test command a cheap one


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, rows: tuple[int, ...], *, heavy: bool = False) -> Callable[..., Any]:
    def wrap(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
        assert name not in SCENARIOS, name
        SCENARIOS[name] = Scenario(name, rows, fn, heavy)
        return fn

    return wrap


# ------------------------------------------------------------------ figures


@dataclass
class Figures:
    runs: int = 0
    corrupted: int = 0
    outside: int = 0
    changed: int = 0
    leaks: int = 0
    panics: int = 0
    leftovers: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    KEYS = ("corrupted", "outside", "changed", "leaks", "panics", "leftovers", "failed")

    def add(self, other: Figures) -> None:
        self.runs += other.runs
        for k in self.KEYS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.notes.extend(other.notes)
        self.findings.extend(other.findings)

    @property
    def clean(self) -> bool:
        return all(getattr(self, k) == 0 for k in self.KEYS)


# ------------------------------------------------------------------ capture


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.sink.append(self.format(record))


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int, int, int]]:
    out: dict[str, tuple[int, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            p = here / name
            if p in skip:
                continue
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(p)
                size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
                out[str(p.relative_to(root))] = (st.st_mode, size, st.st_mtime_ns, st.st_ino)
    return out


_TEMP = re.compile(
    r"(\.part$|\.part\.|\.tmp|\.staging\.|\.old\.|\.trash\.|\.state$|^switching\.json$)"
)


def leftover_temps(cache: Path) -> list[str]:
    """Temp files left in a cache: downloads/ must hold at most lock files."""
    found: list[str] = []
    if not cache.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(cache):
        rel = Path(dirpath).relative_to(cache)
        for name in dirnames + filenames:
            r = str(rel / name)
            if (r.startswith("downloads/") and not name.endswith(".lock")) or (
                not r.startswith("downloads/") and _TEMP.search(name)
            ):
                found.append(r)
    return sorted(set(found))


def corrupted_entries(cache: Path) -> list[str]:
    """Entries marked verified whose files do not hash to their manifest (I1)."""
    import json

    bad: list[str] = []
    if not cache.is_dir():
        return bad
    # Every current entry, and every revision stored beside one
    # (.revisions/<name>/<commit>/): a rollback would make it current.
    folders = [(entry, cache / entry) for entry in sorted(os.listdir(cache))]
    revisions = cache / ".revisions"
    if revisions.is_dir() and not revisions.is_symlink():
        for name in sorted(os.listdir(revisions)):
            if (revisions / name).is_dir():
                for key in sorted(os.listdir(revisions / name)):
                    folders.append((f".revisions/{name}/{key}", revisions / name / key))
    for entry, d in folders:
        meta_p, man_p = d / ".caxton_metadata", d / ".caxton_checksum"
        if os.path.islink(d) or not meta_p.is_file():
            continue
        try:
            meta = json.loads(meta_p.read_text())
            files = json.loads(man_p.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not marked complete in a form anyone trusts
        if meta.get("validation_status") != "verified":
            continue
        rels = sorted(files)
        paths = [d / r for r in rels]
        if not all(p.is_file() and not p.is_symlink() for p in paths):
            bad.append(f"{entry}: a listed file is missing or not regular")
            continue
        digests = _core.hash_files(paths, "sha256") if paths else []
        for r, p, got in zip(rels, paths, digests, strict=True):
            want = files[r]
            if got != want.get("sha256") or p.stat().st_size != want.get("size"):
                bad.append(f"{entry}/{r}: sha256 {got}, manifest {want.get('sha256')}")
    return bad


def fingerprint(entry: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for dirpath, _, filenames in os.walk(entry):
        for name in filenames:
            p = Path(dirpath) / name
            if name in (".caxton_metadata",):
                continue  # access counts and dates may change; the bytes may not
            out[str(p.relative_to(entry))] = (p.stat().st_size, _core.sha256_file(p))
    return out


# ------------------------------------------------------------------ the context


class Ctx:
    """One scenario run: a fresh sandbox and everything it captured."""

    def __init__(self, name: str, base: Path, *, cheap: bool) -> None:
        self.name = name
        self.cheap = cheap
        self.sandbox = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=base))
        os.chmod(self.sandbox, 0o755)  # a child may run as another user (read-only row)
        self.cache = self.sandbox / "cache"
        self.out = self.sandbox / "out"
        self.canary = self.sandbox / "canary"
        self.work = self.sandbox / "work"
        for d in (self.out, self.canary, self.work):
            d.mkdir(mode=0o755)
        (self.canary / "keep").write_text("canary: must never change\n")
        self.texts: list[str] = []
        self.figures = Figures(runs=1)
        self._before: dict[str, tuple[int, int, int, int]] | None = None
        self._protected: dict[str, dict[str, tuple[int, str]]] = {}
        self.allow_leftovers: str | None = None
        self.env: dict[str, str] = {}

    # -- phases ----------------------------------------------------------
    def begin(self) -> None:
        """Inputs are built: snapshot what must not change from here on."""
        self._before = _snapshot(self.sandbox, (self.cache, self.out))

    def protect(self, name: str) -> None:
        """A complete entry that no failed operation may change (I3)."""
        self._protected[name] = fingerprint(self.cache / name)

    # -- running things --------------------------------------------------
    @contextlib.contextmanager
    def case(self, label: str) -> Iterator[None]:
        """Name the case in any failure inside (a scenario may run many)."""
        try:
            yield
        except AssertionError as e:
            raise AssertionError(f"[{label}] {e}") from e
        except BaseException as e:
            self.record_exception(e)
            raise AssertionError(f"[{label}] {type(e).__name__}: {e}") from e

    def expect(
        self,
        error: type[BaseException] | tuple[type[BaseException], ...],
        fn: Callable[..., Any],
        *args: Any,
        names: tuple[str, ...] = (),
        finding: str | None = None,
        **kw: Any,
    ) -> BaseException:
        """``fn`` must raise ``error`` (a typed CaxtonError) whose message names
        ``names``; anything else counts as a panic or a failure. ``finding``:
        a known, reported defect, counted apart when the error is untyped."""
        try:
            fn(*args, **kw)
        except BaseException as e:
            if finding is not None and not isinstance(e, CaxtonError):
                self.finding(f"{finding} ({type(e).__name__})")
                self.texts += [str(e), repr(e), "".join(traceback.format_exception(e))]
            else:
                self.record_exception(e)
            if not isinstance(e, error):
                raise AssertionError(f"expected {error}, got {type(e).__name__}: {e}") from e
            for n in names:
                assert n in str(e), f"{type(e).__name__} does not name {n!r}: {e}"
            return e
        raise AssertionError(f"expected {error}, but {fn} succeeded")

    def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run an operation that must succeed, recording any escape."""
        try:
            return fn(*args, **kw)
        except BaseException as e:
            self.record_exception(e)
            raise

    def finding(self, text: str) -> None:
        """A defect the matrix found outside its edit scope: printed and
        counted on its own line of the figures, never hidden."""
        self.figures.findings.append(f"{self.name}: {text}")

    def record_exception(self, e: BaseException) -> None:
        self.texts.append(str(e))
        self.texts.append(repr(e))
        self.texts.append("".join(traceback.format_exception(e)))
        if not isinstance(e, (CaxtonError, AssertionError)):
            self.figures.panics += 1
            self.figures.notes.append(f"{self.name}: untyped {type(e).__name__}: {e}")

    def child(
        self,
        script: str,
        *args: str,
        env: dict[str, str] | None = None,
        wrap: list[str] | None = None,
        **kw: Any,
    ) -> subprocess.Popen[str]:
        """A fresh Python process running ``script`` in the sandbox's work dir."""
        full = {**os.environ, **self.env, **(env or {})}
        # The children run the code the parent runs (a PYTHONPATH naming a
        # worktree's python/ wins over the installed package there too).
        full["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        return subprocess.Popen(
            [*(wrap or []), sys.executable, "-c", script, *args],
            cwd=self.work,
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )

    def finish(self, proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
        out, err = proc.communicate(timeout=timeout)
        self.texts += [out, err]
        if "panicked" in err:
            self.figures.panics += 1
            self.figures.notes.append(f"{self.name}: a child panicked: {err[-400:]}")
        return proc.returncode, out, err

    # -- the invariant checks --------------------------------------------
    def judge(self) -> None:
        f = self.figures
        if self._before is None:
            f.failed += 1
            f.notes.append(f"{self.name}: never called ctx.begin()")
            return
        after = _snapshot(self.sandbox, (self.cache, self.out))
        changed = sorted(
            k for k in set(after) | set(self._before) if after.get(k) != self._before.get(k)
        )
        if (self.canary / "keep").read_text() != "canary: must never change\n":
            changed.append("canary/keep (bytes)")
        if changed:
            f.outside += len(changed)
            f.notes.append(f"{self.name}: changed outside the cache: {changed[:5]}")
        bad = corrupted_entries(self.cache)
        if bad:
            f.corrupted += len(bad)
            f.notes.append(f"{self.name}: corrupted: {bad[:3]}")
        for name, before in self._protected.items():
            now = fingerprint(self.cache / name) if (self.cache / name).is_dir() else {}
            if now != before:
                f.changed += 1
                f.notes.append(f"{self.name}: complete entry {name} changed")
        left = leftover_temps(self.cache)
        if left and self.allow_leftovers is None:
            f.leftovers += len(left)
            f.notes.append(f"{self.name}: leftover temp files: {left[:5]}")
        self._scan_secrets()

    def _scan_secrets(self) -> None:
        from caxton_models import metrics

        texts = [*self.texts, metrics.exposition()]
        hits = [t[:200] for t in texts if SENTINEL in t]
        token = SENTINEL.encode()
        for dirpath, _, filenames in os.walk(self.sandbox):
            for name in filenames:
                p = Path(dirpath) / name
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.lstat(p).st_mode) and token in p.read_bytes():
                        hits.append(f"file {p.relative_to(self.sandbox)}")
        if hits:
            self.figures.leaks += len(hits)
            self.figures.notes.append(f"{self.name}: secret in: {hits[:3]}")


@contextlib.contextmanager
def captured(ctx: Ctx) -> Iterator[None]:
    """DEBUG logs of every logger, stdout and stderr, into ``ctx.texts``."""
    logs: list[str] = []
    handler = _Collect(logs)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        ctx.texts += [*logs, out.getvalue(), err.getvalue()]


def run_one(sc: Scenario, base: Path, *, cheap: bool) -> Figures:
    """Run one scenario in a fresh sandbox and judge it; never raises."""
    ctx = Ctx(sc.name, base, cheap=cheap)
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    os.environ.update(
        {
            "CAXTON_CACHE_DIR": str(ctx.cache),
            "XDG_CACHE_HOME": str(ctx.sandbox / "xdg-cache"),
            "XDG_CONFIG_HOME": str(ctx.sandbox / "xdg-config"),
            "HF_TOKEN": SENTINEL,
            "CAXTON_CONFIG": str(ctx.work / "caxton.yaml"),
        }
    )
    for var in ("CAXTON_OFFLINE", "HF_HUB_OFFLINE", "CAXTON_NO_LOCKS"):
        os.environ.pop(var, None)
    os.chdir(ctx.work)
    try:
        with captured(ctx):
            sc.fn(ctx)
    except BaseException as e:
        ctx.record_exception(e)
        ctx.figures.failed += 1
        tb = "".join(traceback.format_exception(e))[-1500:]
        ctx.figures.notes.append(f"{sc.name}: FAILED: {tb}")
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    try:
        ctx.judge()
    finally:
        _rm(ctx.sandbox)
    return ctx.figures


def _rm(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:  # a scenario may leave read-only dirs behind
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(dirpath, d), 0o755)
    shutil.rmtree(path, ignore_errors=True)
