"""``caxton model ...``: list, info, download, install, export, verify, remove, gc
(update, rollback and migrate: ``_lifecycle``)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caxton_models.errors import (
    EXIT_OK,
    EXIT_VERIFY_FAILED,
)

if TYPE_CHECKING:
    from caxton_models.acquire.manager import ModelManager

from caxton_models.ops.cli._common import (
    _emit,
    _human,
    _installed_json,
    _manager,
    _sub,
)
from caxton_models.ops.cli._lifecycle import add_lifecycle_commands


def _cmd_list(args: argparse.Namespace) -> int:
    mgr = _manager(args)
    installed = {m.name: m for m in mgr.installed()}
    rows: list[dict[str, Any]] = []
    for name in mgr.registry.names():
        spec = mgr.registry.get(name)
        m = installed.get(name)
        if args.installed and m is None and not spec.bundled:
            continue
        rows.append(
            {
                "name": name,
                "model_id": spec.model_id,
                "dimensions": spec.dimensions,
                "task": spec.task,
                "size_mb": spec.size_mb,
                "default": name == mgr.config.embedding_model,
                "bundled": spec.bundled,
                "installed": m is not None or spec.bundled,
                "status": "bundled" if spec.bundled else (m.status if m else "not installed"),
                "size_bytes": m.size_bytes if m else None,
                "last_access": m.metadata.last_access if m and m.metadata else None,
                "commit": m.metadata.commit if m and m.metadata else None,
                "stored_revisions": len(mgr.cache.stored_revisions(name)) if m else 0,
            }
        )
    for name, m in sorted(installed.items()):  # installed but no longer in the registry
        if name not in mgr.registry:
            rows.append(
                {"name": name, "model_id": m.metadata.model_id if m.metadata else None,
                 "installed": True, "status": m.status, "size_bytes": m.size_bytes,
                 "default": False, "bundled": False, "dimensions": None, "size_mb": None,
                 "last_access": None, "commit": m.metadata.commit if m.metadata else None,
                 "stored_revisions": len(mgr.cache.stored_revisions(name))}
            )  # fmt: skip

    def text() -> Iterator[str]:
        yield f"{'NAME':<40} {'DIM':>4} {'SIZE':>9}  {'STATUS':<13} REVISION"
        for r in rows:
            size = _human(r["size_bytes"]) if r["size_bytes"] else f"~{r['size_mb'] or 0:.0f} MB"
            mark = " (default)" if r["default"] else ""
            if r.get("task", "embedding") != "embedding":  # rerank: DIM is labels; sparse: vocab
                mark += f" ({r['task']})"
            rev = (r["commit"] or "-")[:12] if r["installed"] and not r["bundled"] else ""
            if r["stored_revisions"]:
                rev += f" (+{r['stored_revisions']} stored)"
            yield (f"{r['name'] + mark:<40} {r['dimensions'] or '-':>4} {size:>9}  "
                   f"{r['status']:<13} {rev}").rstrip()  # fmt: skip
        yield f"cache: {mgr.cache.root}"

    _emit(args, rows, text)
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    mgr = _manager(args)
    spec = mgr.spec(args.model)
    m = mgr.cache.get(spec.name)
    version = mgr.version(spec.name) if m is not None and not spec.bundled else None
    data = {"spec": spec.to_dict(), "installed": _installed_json(m, mgr.limits) if m else None,
            "version": version.to_json() if version else None}  # fmt: skip
    data["int8"] = _int8_info(m.path, mgr.cache.root) if m is not None else None

    def text() -> Iterator[str]:
        yield f"{spec.name}: {spec.model_id} @ {spec.revision}"
        yield f"  {spec.model_type.value}, {spec.architecture}, {spec.dimensions} dimensions, "
        yield f"  max {spec.max_sequence_length} tokens, pooling {spec.pooling}, space {spec.space}"
        if spec.all_prompts:
            yield "  prompts: " + ", ".join(f"{k} {v!r}" for k, v in spec.all_prompts.items())
        if spec.onnx_variants:
            yield "  ONNX variants (load(..., onnx_file=...)): " + ", ".join(spec.onnx_variants)
        if spec.bundled:
            yield "  bundled with caxton-models (works offline)"
        elif m is None:
            yield f"  not installed (caxton model download {spec.name})"
        else:
            meta = m.metadata
            yield f"  installed at {m.path}: {m.status}, {_human(m.size_bytes)}"
            if meta is not None:
                yield f"  commit {meta.commit or '-'}, from {meta.download_source}"
                yield f"  downloaded {meta.download_date}, validated {meta.last_validated or '-'}"
                yield f"  used {meta.access_count} times, last {meta.last_access or '-'}"
            if m.problem:
                yield f"  problem: {m.problem}"
            if version is not None:
                yield from _version_lines(version)
            for path, e in sorted((m.manifest or {}).items()):
                yield f"    {path:<40} {_human(e.size):>9}  {e.sha256[:16]}..."
            yield from _int8_lines(_int8_info(m.path, mgr.cache.root))

    _emit(args, data, text)
    return EXIT_OK


def _int8_info(model_dir: Path, root: Path) -> dict[str, Any]:
    """The int8 recipe ``load(..., quantize=True)`` uses, and the int8 graphs
    of this model already in the graph cache with the recipe that made each."""
    from caxton_models.runtime._optimize import INT8_RECIPE, graph_notes
    from caxton_models.store import graph_dir_for

    notes = graph_notes(graph_dir_for(model_dir, root))
    built = {k: v for k, v in notes.items() if "int8_recipe" in v}
    return {"recipe": INT8_RECIPE.note(), "graphs": built}


def _int8_lines(info: dict[str, Any]) -> Iterator[str]:
    yield f"  int8 (load(..., quantize=True)): {info['recipe']['description']}"
    for name, note in sorted(info["graphs"].items()):
        yield f"  int8 graph {name}: recipe {note['int8_recipe']}"


def _version_lines(v: Any) -> Iterator[str]:
    checked = v.last_update_check or "never"
    if v.update_available:
        yield f"  update available: {v.latest_commit} (checked {checked}; caxton model update)"
    else:
        yield f"  updates ({v.strategy}): none known, checked {checked}"
    if v.available:
        yield "  refs: " + ", ".join(f"{n}={c[:12]}" for n, c in sorted(v.available.items()))
    for s in v.stored:
        yield f"  stored revision {s.commit or '-'} ({s.role}, downloaded {s.download_date})"


def _cmd_download(args: argparse.Namespace) -> int:
    from caxton_models.ops._progress import DownloadProgress

    mgr = _manager(args)
    spec = mgr.spec(args.model, args.revision)
    progress = DownloadProgress(f"{spec.name}", stream=sys.stderr)
    try:
        path = mgr.download(spec.name, revision=args.revision, force=args.force, progress=progress)
    finally:
        progress.close() if progress.done else None
    m = mgr.cache.get(spec.name)
    data = {"name": spec.name, "path": str(path), "downloaded_bytes": progress.done,
            "installed": _installed_json(m, mgr.limits) if m else None}  # fmt: skip

    def text() -> Iterator[str]:
        how = "downloaded" if progress.done else "already cached and valid"
        yield f"{spec.name}: {how} at {path}"

    _emit(args, data, text)
    return EXIT_OK


def _install_source(args: argparse.Namespace, mgr: ModelManager) -> Any:
    from caxton_models.errors import ValidationFailed
    from caxton_models.ops.archive import MANIFEST_NAME, extract_archive, read_manifest

    src = Path(args.source)
    name = args.model_id
    spec = mgr.spec(name) if name in mgr.registry else None
    if spec is None:
        raise ValidationFailed(
            f"{name!r} is not a registry model name; add it under 'models:' in caxton.yaml "
            "(see `caxton model list`) before installing it",
            model=name,
        )
    expected = dict(spec.checksums)

    def install(folder: Path, manifest: Any) -> Any:
        # Provenance: installed, not fetched; the repo id and commit are the source's word.
        kw: dict[str, Any] = {"source": f"{'local' if src.is_dir() else 'archive'}:{src}"}
        if manifest is not None:
            if manifest.name != name:
                print(
                    f"caxton: note: the export was made for {manifest.name!r}; "
                    f"installing it as {name!r}",
                    file=sys.stderr,
                )
            for rel, (_, digest) in manifest.files.items():
                if expected.get(rel, digest) != digest:
                    raise ValidationFailed(
                        f"{rel} in {src}: the export's sha256 {digest} differs from the "
                        f"registry's {expected[rel]} for {name}; refusing a different version",
                        model=name,
                    )
                expected.setdefault(rel, digest)
            kw.update(model_id=manifest.model_id, revision=manifest.revision,
                      commit=manifest.commit, exclude=(MANIFEST_NAME,))  # fmt: skip
            missing = sorted(set(manifest.files) - _files_in(folder))
            if missing:
                raise ValidationFailed(
                    f"{src} lacks files its manifest lists: {', '.join(missing)}", model=name
                )
        present = _files_in(folder) - {MANIFEST_NAME}
        checked = sorted(present & set(expected))
        if args.validate_checksums and not checked:
            raise ValidationFailed(
                f"--validate-checksums: none of the files in {src} has a reference sha256 "
                f"(the registry pins none of them for {name}, and the source carries no caxton "
                "manifest); install without --validate-checksums to trust the source, or pin "
                "checksums under 'models:' in caxton.yaml",
                model=name,
            )
        args.checked_counts = (len(checked), len(present))
        return mgr.install_from_dir(name, folder, expected=expected, **kw)

    if src.is_dir():
        manifest = (
            read_manifest(src / MANIFEST_NAME, source=str(src))
            if (src / MANIFEST_NAME).is_file()
            else None
        )
        return install(src, manifest)
    if not src.exists():
        raise FileNotFoundError(2, f"install source {src} does not exist", str(src))
    mgr.cache.ensure_dirs()
    # Unpack on the cache's file system (downloads/, reclaimed after a crash).
    with tempfile.TemporaryDirectory(prefix=f"{name}.unpack.", dir=mgr.cache.downloads) as tmp:
        manifest = extract_archive(src, Path(tmp))
        return install(Path(tmp), manifest)


def _files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _cmd_install(args: argparse.Namespace) -> int:
    mgr = _manager(args)
    m = _install_source(args, mgr)
    data = _installed_json(m, mgr.limits)
    data["checked_files"], data["source_files"] = getattr(args, "checked_counts", (0, 0))

    def text() -> Iterator[str]:
        n = len(m.manifest or {})
        yield f"{m.name}: installed {n} files ({_human(m.size_bytes)}) at {m.path}, {m.status}"
        checked, total = getattr(args, "checked_counts", (0, n))
        yield (
            f"  sha256: {checked} of {total} files matched the registry or the export manifest; "
            "the rest were hashed and recorded"
        )

    _emit(args, data, text)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from caxton_models.errors import ModelNotFound
    from caxton_models.ops.archive import ExportManifest, export_dir

    mgr = _manager(args)
    name = args.model_id
    m = mgr.cache.get(name)
    if m is None or m.manifest is None:
        raise ModelNotFound(
            f"model {name!r} is not installed in {mgr.cache.root}"
            + (f" ({m.problem})" if m is not None and m.problem else "")
            + f"; run `caxton model download {name}` first",
            model=name,
        )
    if args.hf_cache is not None:
        return _export_hf_cache(args, mgr, m)
    meta = m.metadata
    spec = mgr.registry.get(name).to_dict() if name in mgr.registry else None
    manifest = ExportManifest(
        name=name,
        model_id=meta.model_id if meta else (spec or {}).get("model_id", f"local/{name}"),
        revision=meta.revision if meta else "local",
        commit=meta.commit if meta else None,
        files={p: (e.size, e.sha256) for p, e in m.manifest.items()},
        spec=spec,
        metadata=meta.to_json() if (meta and args.include_metadata) else None,
    )
    with mgr.cache.in_use(name):  # not evicted while being read
        result = export_dir(m.path, manifest.files, args.output, manifest=manifest)
    data = {"path": str(result.path), "files": result.files, "bytes": result.bytes,
            "archive_bytes": result.archive_bytes, "sha256": result.sha256}  # fmt: skip

    def text() -> Iterator[str]:
        yield (
            f"{name}: exported {result.files} files ({_human(result.bytes)}) to {result.path} "
            f"({_human(result.archive_bytes)}, sha256 {result.sha256})"
        )

    _emit(args, data, text)
    return EXIT_OK


def _export_hf_cache(args: argparse.Namespace, mgr: Any, m: Any) -> int:
    from caxton_models.config import hf_hub_cache_dir
    from caxton_models.ops.hfexport import export_hf_cache

    dest = Path(args.hf_cache) if args.hf_cache else hf_hub_cache_dir()
    with mgr.cache.in_use(m.name):
        result = export_hf_cache(m, dest)
    data = {"path": str(result.repo_folder), "commit": result.commit, "ref": result.ref,
            "files": result.files, "hard_links": result.linked}  # fmt: skip

    def text() -> Iterator[str]:
        yield (
            f"{m.name}: {result.files} files in the Hugging Face cache at {result.repo_folder} "
            f"(snapshot {result.commit}, refs/{result.ref}; {result.linked} hard links, "
            f"{result.files - result.linked} copies)"
        )

    _emit(args, data, text)
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from caxton_models.errors import ModelNotFound

    mgr = _manager(args)
    if args.model:
        spec = mgr.spec(args.model)
        m = mgr.cache.get(spec.name)
        if m is None:
            raise ModelNotFound(f"model {spec.name!r} is not installed", model=spec.name)
        targets = [m]
    else:
        targets = mgr.installed()
    results = []
    for m in targets:
        if args.repair and m.name in mgr.registry:
            results.append(mgr.repair(m.name))
        else:
            results.append(mgr.verify(m.name, full=args.full))
    commits = {m.name: (m.metadata.commit if m.metadata else None) for m in targets}
    data = [
        {
            "model": r.model,
            "commit": commits.get(r.model),
            "mode": r.mode,
            "ok": r.ok,
            "steps": [{"name": s.name, "ok": s.ok, "detail": s.detail} for s in r.steps],
            "bad_files": r.bad_files,
        }
        for r in results
    ]

    def text() -> Iterator[str]:
        if not results:
            yield f"no models installed in {mgr.cache.root}"
        for r in results:
            yield ("ok    " if r.ok else "FAILED") + f" {r.summary()}"
            yield f"         revision {commits.get(r.model) or '-'}"
            for path in r.bad_files:
                f = r.files[path]
                yield f"         {path}: {f.status.value} {f.detail}".rstrip()
            if not r.ok and not args.repair:
                yield f"         repair: caxton model verify {r.model} --repair"

    _emit(args, data, text)
    return EXIT_OK if all(r.ok for r in results) else EXIT_VERIFY_FAILED


def _cmd_remove(args: argparse.Namespace) -> int:
    from caxton_models.errors import ModelNotFound

    mgr = _manager(args)
    if not mgr.remove(args.model, force=args.force):
        raise ModelNotFound(
            f"model {args.model!r} is not installed in {mgr.cache.root}", model=args.model
        )
    _emit(args, {"removed": args.model}, lambda: iter([f"{args.model}: removed"]))
    return EXIT_OK


def _cmd_gc(args: argparse.Namespace) -> int:
    mgr = _manager(args)
    out = mgr.gc(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"

    def text() -> Iterator[str]:
        yield f"temporary files {verb}: {', '.join(out['temp']) or 'none'}"
        yield f"unused models {verb}: {', '.join(out['unused']) or 'none'}"
        yield f"models evicted by policy ({verb}): {', '.join(out['evicted']) or 'none'}"
        yield (f"stored revisions {verb} (no rollback to them after this): "
               f"{', '.join(out['revisions']) or 'none'}")  # fmt: skip

    _emit(args, {"dry_run": args.dry_run, **out}, text)
    return EXIT_OK


def _add_export_command(msub: Any) -> None:
    """``caxton model export``: a .tar.gz, or the Hugging Face cache layout."""
    p = _sub(
        msub,
        "export",
        "export an installed model to a reproducible .tar.gz for offline machines",
        "caxton model export --model-id all-MiniLM-L6-v2 --output minilm.tar.gz --include-metadata",
        func=_cmd_export,
        json=True,
    )
    p.add_argument("--model-id", required=True, metavar="NAME")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--output", metavar="FILE.tar.gz")
    out.add_argument(
        "--hf-cache",
        nargs="?",
        const="",
        metavar="DIR",
        help="write into the Hugging Face cache layout instead (default: HF_HUB_CACHE, "
        "HF_HOME/hub or ~/.cache/huggingface/hub), so transformers and sentence-transformers "
        "find the model offline",
    )
    p.add_argument("--include-metadata", action="store_true", help="add the cache metadata")


def add_model_commands(msub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _sub(msub, "list", "list registry models and what is installed", "caxton model list --json",
             func=_cmd_list, json=True)  # fmt: skip
    p.add_argument("--installed", action="store_true", help="only models that are installed")

    p = _sub(msub, "info", "show a model's spec, files and cache metadata",
             "caxton model info all-MiniLM-L6-v2", func=_cmd_info, json=True)  # fmt: skip
    p.add_argument("model", metavar="MODEL")

    p = _sub(msub, "download", "download a model (verified, resumable) into the cache",
             "caxton model download all-MiniLM-L6-v2 --revision main",
             func=_cmd_download, json=True)  # fmt: skip
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--revision", help="branch, tag or commit (default: the registry's pin)")
    p.add_argument("--force", action="store_true", help="download again even if cached")

    p = _sub(
        msub,
        "install",
        "install a model from a folder or a .tar/.tar.gz, with no network",
        "caxton model install --model-id all-MiniLM-L6-v2 --source ./all-MiniLM-L6-v2/ "
        "--validate-checksums",
        description="Install a model from a folder (the Hub's layout, or an unpacked export) or "
        "an archive made by `caxton model export`. Every file is hashed and checked against the "
        "archive's manifest and the registry; only regular files are accepted; the model is "
        "staged and renamed into place, so on any failure the cache is unchanged.",
        func=_cmd_install,
        json=True,
    )
    p.add_argument("--model-id", required=True, metavar="NAME", help="registry name to install as")
    p.add_argument("--source", required=True, metavar="DIR|ARCHIVE")
    p.add_argument(
        "--validate-checksums",
        action="store_true",
        help="require a reference sha256 (registry or manifest) for the weights",
    )

    _add_export_command(msub)

    p = _sub(msub, "verify", "check installed models (quick: sizes; --full: SHA-256)",
             "caxton model verify all-MiniLM-L6-v2 --full",
             func=_cmd_verify, json=True)  # fmt: skip
    p.add_argument("model", metavar="MODEL", nargs="?", help="default: every installed model")
    p.add_argument("--full", action="store_true", help="hash every file (SHA-256)")
    p.add_argument("--repair", action="store_true", help="re-download exactly the bad files")

    p = _sub(msub, "remove", "remove an installed model", "caxton model remove all-mpnet-base-v2",
             func=_cmd_remove, json=True)  # fmt: skip
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--force", action="store_true", help="even if a running process uses it")

    p = _sub(msub, "gc", "reclaim temp files, drop unused models, enforce the size limits",
             "caxton model gc --dry-run", func=_cmd_gc, json=True)  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")

    add_lifecycle_commands(msub)
