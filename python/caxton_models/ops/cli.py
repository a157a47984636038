"""The ``caxton`` command line: the spec's operator interface.

Exit codes (also in ``caxton --help``):

  0    success
  1    the operation failed (one line on stderr: what, where, what to do)
  2    bad usage
  3    verification found problems (``caxton model verify``, ``caxton health``)
  4    the model is unknown or not installed
  5    the network is needed but not allowed (offline) or not reachable
  130  interrupted (Ctrl-C); downloads keep their resumable parts

Heavy modules (ONNX Runtime, aiohttp, numpy) are imported inside the
commands that need them, so ``caxton --help`` and ``caxton model list`` start
fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caxton_models import __version__

if TYPE_CHECKING:
    from caxton_models.acquire.manager import ModelManager
    from caxton_models.config import Config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_VERIFY_FAILED = 3
EXIT_NOT_FOUND = 4
EXIT_OFFLINE = 5
EXIT_INTERRUPTED = 130

_EXIT_CODES = """exit codes:
  0 success, 1 failed, 2 bad usage, 3 verification found problems,
  4 model unknown or not installed, 5 network needed but offline/unreachable,
  130 interrupted"""


# --------------------------------------------------------------------------- helpers


def _config(args: argparse.Namespace) -> Config:
    cached = getattr(args, "_config_obj", None)
    if cached is None:
        from caxton_models.config import load_config

        cached = load_config(args.config)
        if getattr(args, "cache_dir", None):
            from dataclasses import replace

            cached = replace(
                cached, cache=replace(cached.cache, directory=Path(args.cache_dir).expanduser())
            )
        args._config_obj = cached
    return cached


def _manager(args: argparse.Namespace) -> ModelManager:
    from caxton_models.acquire.manager import ModelManager

    return ModelManager(_config(args))


def _emit(args: argparse.Namespace, data: Any, text: Callable[[], Iterator[str]]) -> None:
    """Print ``data`` as JSON with --json, else the human lines ``text`` yields."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in text():
            print(line)


def _human(n: float) -> str:
    from caxton_models.ops._progress import human_bytes

    return human_bytes(n)


def _installed_json(m: Any) -> dict[str, Any]:
    meta = m.metadata
    return {
        "name": m.name,
        "path": str(m.path),
        "status": m.status,
        "size_bytes": m.size_bytes,
        "pinned": m.pinned,
        "problem": m.problem,
        "metadata": meta.to_json() if meta is not None else None,
        "files": (
            {p: {"size": e.size, "sha256": e.sha256} for p, e in sorted(m.manifest.items())}
            if m.manifest is not None
            else None
        ),
    }


# --------------------------------------------------------------------------- hash


def _cmd_hash(args: argparse.Namespace) -> int:
    from caxton_models._core import hash_files

    digests = hash_files(args.files, algorithm=args.algorithm)
    for path, digest in zip(args.files, digests, strict=True):
        if args.json:
            print(json.dumps({"path": path, "algorithm": args.algorithm, "digest": digest}))
        else:
            print(f"{digest}  {path}")
    return EXIT_OK


# --------------------------------------------------------------------------- model


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
                "size_mb": spec.size_mb,
                "default": name == mgr.config.embedding_model,
                "bundled": spec.bundled,
                "installed": m is not None or spec.bundled,
                "status": "bundled" if spec.bundled else (m.status if m else "not installed"),
                "size_bytes": m.size_bytes if m else None,
                "last_access": m.metadata.last_access if m and m.metadata else None,
            }
        )
    for name, m in sorted(installed.items()):  # installed but no longer in the registry
        if name not in mgr.registry:
            rows.append(
                {"name": name, "model_id": m.metadata.model_id if m.metadata else None,
                 "installed": True, "status": m.status, "size_bytes": m.size_bytes,
                 "default": False, "bundled": False, "dimensions": None, "size_mb": None,
                 "last_access": None}
            )  # fmt: skip

    def text() -> Iterator[str]:
        yield f"{'NAME':<40} {'DIM':>4} {'SIZE':>9}  STATUS"
        for r in rows:
            size = _human(r["size_bytes"]) if r["size_bytes"] else f"~{r['size_mb'] or 0:.0f} MB"
            mark = " (default)" if r["default"] else ""
            yield f"{r['name'] + mark:<40} {r['dimensions'] or '-':>4} {size:>9}  {r['status']}"
        yield f"cache: {mgr.cache.root}"

    _emit(args, rows, text)
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    mgr = _manager(args)
    spec = mgr.spec(args.model)
    m = mgr.cache.get(spec.name)
    data = {"spec": spec.to_dict(), "installed": _installed_json(m) if m else None}

    def text() -> Iterator[str]:
        yield f"{spec.name}: {spec.model_id} @ {spec.revision}"
        yield f"  {spec.model_type.value}, {spec.architecture}, {spec.dimensions} dimensions, "
        yield f"  max {spec.max_sequence_length} tokens, pooling {spec.pooling}, space {spec.space}"
        if spec.query_prefix or spec.passage_prefix:
            yield f"  prefixes: query {spec.query_prefix!r}, passage {spec.passage_prefix!r}"
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
            for path, e in sorted((m.manifest or {}).items()):
                yield f"    {path:<40} {_human(e.size):>9}  {e.sha256[:16]}..."

    _emit(args, data, text)
    return EXIT_OK


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
            "installed": _installed_json(m) if m else None}  # fmt: skip

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
        kw: dict[str, Any] = {"source": f"local:{src}"}
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
        args._checked = (len(checked), len(present))
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
    data = _installed_json(m)
    data["checked_files"], data["source_files"] = getattr(args, "_checked", (0, 0))

    def text() -> Iterator[str]:
        n = len(m.manifest or {})
        yield f"{m.name}: installed {n} files ({_human(m.size_bytes)}) at {m.path}, {m.status}"
        checked, total = getattr(args, "_checked", (0, n))
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
    data = [
        {
            "model": r.model,
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

    _emit(args, {"dry_run": args.dry_run, **out}, text)
    return EXIT_OK


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0-65535; 0 = any free port)")
    return port


def _serve_health(args: argparse.Namespace, cache: Path) -> Callable[[], Any]:
    """What ``GET /health`` of the mirror checks: the served cache (integrity,
    size, disk). The mirror neither embeds nor downloads, so no model is
    loaded and no endpoint probed on every poll."""
    from dataclasses import replace

    from caxton_models import metrics
    from caxton_models.acquire.manager import ModelManager
    from caxton_models.ops.health import check_health

    cfg = _config(args)
    cfg = replace(cfg, cache=replace(cfg.cache, directory=cache))
    mgr = ModelManager(cfg)  # also points caxton_model_cache_size_bytes at this cache
    metrics.watch_cache(mgr.cache)
    return lambda: check_health(manager=mgr, network=False, load=False)


def _serve_options(args: argparse.Namespace, cache: str | None) -> Any:
    """ServeOptions from the serve flags; a bad flag is a ConfigError naming it (exit 2)."""
    from caxton_models.errors import ConfigError
    from caxton_models.ops.server import (
        AccessRules,
        ServeOptions,
        Upstream,
        read_tokens,
        tls_context,
    )

    tokens: list[str] = []
    if args.token_file:
        try:
            tokens = read_tokens(args.token_file)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--token-file: {e}") from None
    if tokens and args.lfs_redirect:
        raise ConfigError(
            "--token-file and --lfs-redirect do not mix: clients drop the token on the "
            "redirect to the second origin, which would then refuse them"
        )
    opts = ServeOptions(access=AccessRules.build(allow=args.allow, deny=args.deny, tokens=tokens))
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together (PEM certificate chain and key)")
    if args.tls_cert:
        try:
            opts.ssl = tls_context(args.tls_cert, args.tls_key)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise ConfigError(f"--tls-cert/--tls-key: cannot load them: {e}") from None
    if args.upstream:
        if cache is None:
            raise ConfigError("--upstream needs a cache to fill: use --cache, not --repos")
        upstream_token = None
        if args.upstream_token_file:
            try:
                upstream_token = read_tokens(args.upstream_token_file)[0]
            except (OSError, ValueError) as e:
                raise ConfigError(f"--upstream-token-file: {e}") from None
        try:
            opts.upstream = Upstream(
                endpoints=_upstream_urls(args.upstream),
                cache_dir=cache,
                ref_ttl=args.ref_ttl,
                timeout=args.upstream_timeout,
                token=upstream_token,
                config=_config(args),
            )
        except ValueError as e:
            raise ConfigError(f"--upstream: {e}") from None
    return opts


def _parse_ref(value: str) -> tuple[str, str, str]:
    from caxton_models.errors import ConfigError
    from caxton_models.ops.server import Catalog, CatalogError

    repo_rev, _, commit = value.partition("=")
    repo_id, _, rev = repo_rev.rpartition("@")
    try:
        Catalog().pin_ref(repo_id, rev, commit)  # checks the three parts
    except CatalogError as e:
        raise ConfigError(f"{e} (expected --ref OWNER/NAME@REF=COMMIT)", key="--ref") from None
    return repo_id, rev, commit


def _upstream_urls(urls: list[str]) -> list[str]:
    from caxton_models.acquire.hub import HubClient

    return list(HubClient(urls, token="", offline=False).endpoints)  # checks each URL


def _cmd_model_serve(args: argparse.Namespace) -> int:
    from caxton_models.errors import ConfigError

    try:
        return _model_serve(args)
    except ConfigError as e:  # a bad flag: usage, like argparse's own errors
        print(f"caxton model serve: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def _model_serve(args: argparse.Namespace) -> int:
    # Imported here: aiohttp is only needed by this command.
    import logging

    from caxton_models.ops.server import Catalog, serve

    if args.verbose:  # one access-log line per request on stderr
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    cache = None if args.repos else (args.cache or str(_config(args).cache.directory))
    options = _serve_options(args, cache)
    refs = [_parse_ref(r) for r in args.ref]
    if cache is None:
        catalog = Catalog.from_repos(args.repos)
        source = f"repos in {args.repos}"
    else:
        if options.upstream is not None:  # an empty pull-through mirror starts from nothing
            Path(cache).mkdir(parents=True, exist_ok=True)
        catalog = Catalog.from_cache(cache)
        # Models downloaded after start-up appear on the first request that misses.
        options.rescan = lambda: Catalog.from_cache(cache)
        options.rescan_after = 5.0
        source = f"verified models of the cache {cache}"
        options.health = _serve_health(args, Path(cache))
    for repo_id, rev, commit in refs:
        catalog.pin_ref(repo_id, rev, commit)
    if not catalog.snapshots and options.upstream is None:
        print(f"caxton: warning: nothing to serve yet from {source}", file=sys.stderr)

    def ready(url: str, lfs_url: str | None) -> None:
        repos = ", ".join(catalog.repo_ids) or "none"
        print(f"Serving {source} at {url} (repositories: {repos})")
        if options.upstream is not None:
            print(f"Fetching what is not cached from {', '.join(options.upstream.endpoints)}")
        if lfs_url:
            print(f"LFS files redirect to {lfs_url}")
        print(f"Point clients at it: HF_ENDPOINT={url}  (Ctrl-C stops)", flush=True)

    serve(
        catalog,
        host=args.host,
        port=args.port,
        lfs_redirect=args.lfs_redirect,
        options=options,
        on_ready=ready,
    )
    return EXIT_OK


# --------------------------------------------------------------------------- health, metrics


def _cmd_health(args: argparse.Namespace) -> int:
    from caxton_models.ops.health import check_health, lines

    report = check_health(manager=_manager(args), network=not args.skip_network,
                          timeout=args.timeout)  # fmt: skip
    _emit(args, report.to_json(), lambda: lines(report))
    failed = {c.name for c in report.failed}
    if not failed:
        return EXIT_OK
    # Only the network is down: the documented "unreachable" code, not corruption.
    return EXIT_OFFLINE if failed == {"download_connectivity"} else EXIT_VERIFY_FAILED


def _cmd_metrics(args: argparse.Namespace) -> int:
    from caxton_models import metrics
    from caxton_models.store import ModelCache

    metrics.watch_cache(ModelCache(_config(args).cache.directory))
    sys.stdout.write(metrics.exposition())
    return EXIT_OK


# --------------------------------------------------------------------------- embed


def _read_texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.texts)
    if args.input:
        if args.input == "-":
            lines = sys.stdin.read().splitlines()
        else:
            lines = Path(args.input).read_text(encoding="utf-8").splitlines()
        texts.extend(lines)
    if not texts:
        raise ValueError("nothing to embed: give TEXT arguments or --input FILE (one per line)")
    return texts


def _choose_embedder(args: argparse.Namespace) -> Any:
    """The model to embed with: --model (downloaded if needed and allowed), or
    the configured default when it is cached, else the bundled model, said so."""
    import caxton_models
    from caxton_models.resolve import default_or_bundled

    cfg = _config(args)
    if args.model:
        return caxton_models.load(args.model, config=cfg)
    resolved, note = default_or_bundled(_manager(args))
    if note:
        print(f"caxton: {note}", file=sys.stderr)
    return caxton_models.load(resolved.name, config=cfg)


def _cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from caxton_models.ops._progress import RateProgress

    texts = _read_texts(args)
    emb = _choose_embedder(args)
    chunk = 4096
    show = len(texts) > chunk or (args.progress and len(texts) > 1)
    rate = RateProgress(len(texts)) if show else None
    parts = []
    for start in range(0, len(texts), chunk):
        batch = texts[start : start + chunk]
        parts.append(emb.embed(batch, kind=args.kind, normalize=not args.no_normalize))
        if rate is not None:
            rate.update(len(batch))
    if rate is not None:
        rate.close()
    vectors = np.concatenate(parts) if parts else np.zeros((0, emb.dimensions), np.float32)
    if args.output:
        out = Path(args.output)
        if out.suffix != ".npy":
            raise ValueError(f"--output {out}: only .npy is written; JSON lines go to stdout")
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                np.save(f, vectors)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        print(
            f"wrote {vectors.shape[0]} x {vectors.shape[1]} float32 embeddings of "
            f"{emb.model_id} to {out}",
            file=sys.stderr,
        )
        return EXIT_OK
    w = sys.stdout.write
    for i, (text, vec) in enumerate(zip(texts, vectors, strict=True)):
        row = {"index": i, "model": emb.model_id, "space": emb.space, "text": text,
               "embedding": [round(float(x), 7) for x in vec]}  # fmt: skip
        w(json.dumps(row, ensure_ascii=False) + "\n")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _sub(
    parent: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    example: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    return parent.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=f"example:\n  {example}\n\n{_EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p_model = sub.add_parser(
        "model",
        help="list, download, install, export, verify, remove models; serve a mirror",
        description="Manage the models in the cache.",
        epilog=f"example:\n  caxton model list\n\n{_EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = p_model.add_subparsers(dest="model_command", metavar="MODEL_COMMAND")

    p = _sub(msub, "list", "list registry models and what is installed", "caxton model list --json")
    p.add_argument("--installed", action="store_true", help="only models that are installed")
    _json_flag(p)
    p.set_defaults(func=_cmd_list)

    p = _sub(msub, "info", "show a model's spec, files and cache metadata",
             "caxton model info all-MiniLM-L6-v2")  # fmt: skip
    p.add_argument("model", metavar="MODEL")
    _json_flag(p)
    p.set_defaults(func=_cmd_info)

    p = _sub(msub, "download", "download a model (verified, resumable) into the cache",
             "caxton model download all-MiniLM-L6-v2 --revision main")  # fmt: skip
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--revision", help="branch, tag or commit (default: the registry's pin)")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    _json_flag(p)
    p.set_defaults(func=_cmd_download)

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
    )
    p.add_argument("--model-id", required=True, metavar="NAME", help="registry name to install as")
    p.add_argument("--source", required=True, metavar="DIR|ARCHIVE")
    p.add_argument(
        "--validate-checksums",
        action="store_true",
        help="require a reference sha256 (registry or manifest) for the weights",
    )
    _json_flag(p)
    p.set_defaults(func=_cmd_install)

    p = _sub(
        msub,
        "export",
        "export an installed model to a reproducible .tar.gz for offline machines",
        "caxton model export --model-id all-MiniLM-L6-v2 --output minilm.tar.gz --include-metadata",
    )
    p.add_argument("--model-id", required=True, metavar="NAME")
    p.add_argument("--output", required=True, metavar="FILE.tar.gz")
    p.add_argument("--include-metadata", action="store_true", help="add the cache metadata")
    _json_flag(p)
    p.set_defaults(func=_cmd_export)

    p = _sub(msub, "verify", "check installed models (quick: sizes; --full: SHA-256)",
             "caxton model verify all-MiniLM-L6-v2 --full")  # fmt: skip
    p.add_argument("model", metavar="MODEL", nargs="?", help="default: every installed model")
    p.add_argument("--full", action="store_true", help="hash every file (SHA-256)")
    p.add_argument("--repair", action="store_true", help="re-download exactly the bad files")
    _json_flag(p)
    p.set_defaults(func=_cmd_verify)

    p = _sub(msub, "remove", "remove an installed model", "caxton model remove all-mpnet-base-v2")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--force", action="store_true", help="even if a running process uses it")
    _json_flag(p)
    p.set_defaults(func=_cmd_remove)

    p = _sub(msub, "gc", "reclaim temp files, drop unused models, enforce the size limits",
             "caxton model gc --dry-run")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    _json_flag(p)
    p.set_defaults(func=_cmd_gc)

    p = _sub(
        msub,
        "serve",
        "serve cached models to any Hugging Face Hub client (HF_ENDPOINT=...)",
        "caxton model serve --port 8080   # then HF_ENDPOINT=http://127.0.0.1:8080",
        description="Serve the verified models of a caxton cache (or a folder of repos in the "
        "Hub's layout) over the Hugging Face Hub's HTTP protocol, as a read-only mirror.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0 = any)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--cache", metavar="DIR", help="caxton cache to serve (default: the cache)")
    src.add_argument("--repos", metavar="DIR", help="serve DIR/<owner>/<name>/ folders instead")
    p.add_argument(
        "--lfs-redirect",
        action="store_true",
        help="redirect LFS files to a second port, as the Hub redirects to its CDN",
    )
    up = p.add_argument_group("pull-through (fetch what is not cached, keep it)")
    up.add_argument(
        "--upstream", action="append", default=[], metavar="URL",
        help="the Hub or another mirror; repeat for several, tried in order",
    )  # fmt: skip
    up.add_argument(
        "--ref-ttl", type=float, default=300.0, metavar="S",
        help="reuse a branch's upstream commit this long (default 300 s)",
    )  # fmt: skip
    up.add_argument(
        "--upstream-timeout", type=float, default=10.0, metavar="S",
        help="per upstream request (default 10 s)",
    )  # fmt: skip
    up.add_argument(
        "--upstream-token-file", metavar="FILE",
        help="the mirror's own Hub token, for gated repos upstream",
    )  # fmt: skip
    up.add_argument(
        "--ref", action="append", default=[], metavar="REPO@REF=COMMIT",
        help="answer REF of REPO with COMMIT, whatever was recorded",
    )  # fmt: skip
    acc = p.add_argument_group("access")
    acc.add_argument(
        "--allow", action="append", default=[], metavar="GLOB",
        help="serve only repos matching one of these (e.g. 'sentence-transformers/*')",
    )  # fmt: skip
    acc.add_argument(
        "--deny", action="append", default=[], metavar="GLOB",
        help="never serve repos matching these (wins over --allow)",
    )  # fmt: skip
    acc.add_argument(
        "--token-file", metavar="FILE",
        help="clients must send one of these tokens (one a line) as their HF_TOKEN",
    )  # fmt: skip
    acc.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    acc.add_argument("--tls-key", metavar="PEM", help="... and this private key")
    p.set_defaults(func=_cmd_model_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caxton",
        description="Get embedding models onto this machine, keep them verified, embed text.",
        epilog='example:\n  caxton embed "Hello world"\n\n' + _EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"caxton {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--config", metavar="FILE", help="caxton.yaml to use (else CAXTON_CONFIG, "
                        "./caxton.yaml, the user config dir)")  # fmt: skip
    parser.add_argument("--cache-dir", metavar="DIR", help="model cache (overrides the config)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _sub(sub, "embed", "embed texts; JSON lines on stdout or a .npy file",
             'caxton embed "Hello world" "Bonjour"   |   caxton embed --input docs.txt '
             "--output vecs.npy")  # fmt: skip
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--input", metavar="FILE", help="one text per line ('-' for stdin)")
    p.add_argument("--output", metavar="FILE.npy", help="write a float32 .npy array instead")
    p.add_argument("--model", help="model name or folder (default: the configured default)")
    p.add_argument("--kind", choices=["passage", "query"], default="passage")
    p.add_argument("--no-normalize", action="store_true", help="skip L2 normalisation")
    p.add_argument("--progress", action="store_true", help="show texts/s on stderr")
    p.set_defaults(func=_cmd_embed)

    _add_model_commands(sub)

    p = _sub(
        sub,
        "health",
        "check the model system: cache integrity, disk, connectivity, loading, embedding",
        "caxton health --json --skip-network",
        description="Check the model system the way the spec's health checks do: quick "
        "validation of every installed model, the cache against its size limits, free disk, "
        "one request to each download endpoint (skipped offline), loading the default model "
        '(or bundled-mini when the default is not installed) and embedding "Hello world". '
        "Nothing is downloaded or changed. Exit 0 when no check fails (warnings and skipped "
        "checks included), 3 when one does, 5 when only the network check fails.",
    )
    p.add_argument("--skip-network", action="store_true", help="do not probe the endpoints")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="per-endpoint timeout of the connectivity check (default 5)")  # fmt: skip
    _json_flag(p)
    p.set_defaults(func=_cmd_health)

    p = _sub(
        sub,
        "metrics",
        "print the model-management metrics in Prometheus' text format",
        "caxton metrics | grep caxton_model_cache_size_bytes",
        description="Print this process's model-management metrics in the Prometheus text "
        "format 0.0.4. A fresh process has only the cache size to report; counters and "
        "histograms (downloads, validation failures, load times) accumulate in long-running "
        "processes: scrape GET /metrics of `caxton model serve`, or call "
        "caxton_models.metrics.exposition() in your application.",
    )
    p.set_defaults(func=_cmd_metrics)

    p = _sub(sub, "hash", "hash files (SHA-256 or BLAKE3) in parallel",
             "caxton hash --algorithm blake3 model.safetensors")  # fmt: skip
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--algorithm", choices=["sha256", "blake3"], default="sha256")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_cmd_hash)
    return parser


# --------------------------------------------------------------------------- main


def _exit_code(exc: BaseException) -> int:
    from caxton_models import errors as e

    if isinstance(exc, e.ModelNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, e.OfflineError | e.NetworkError | e.NetworkTimeout):
        return EXIT_OFFLINE
    if isinstance(exc, e.ValidationFailed):
        return EXIT_VERIFY_FAILED
    return EXIT_FAILED


def _scrub(text: str, args: argparse.Namespace) -> str:
    """Belt and braces: no message ever carries a token, even a foreign one."""
    from caxton_models.errors import scrub_tokens

    token = os.environ.get("HF_TOKEN") or getattr(getattr(args, "_config_obj", None), "token", None)
    return scrub_tokens(text, token)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        target = parser
        if args.command == "model":
            target = next(
                a.choices["model"]
                for a in parser._actions
                if isinstance(a, argparse._SubParsersAction)
            )
        target.print_help()
        return EXIT_USAGE
    from caxton_models.errors import CaxtonError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("caxton: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `caxton embed ... | head`: the reader left; not an error.
        sys.stderr.close()
        return EXIT_OK
    except (CaxtonError, OSError, ValueError, LookupError, RuntimeError) as exc:
        if args.verbose:
            import traceback

            print(_scrub("".join(traceback.format_exception(exc)), args), file=sys.stderr)
        kind = type(exc).__name__
        print(_scrub(f"caxton: error: {kind}: {exc}", args), file=sys.stderr)
        return _exit_code(exc)


if __name__ == "__main__":
    raise SystemExit(main())
