"""sentence-transformers loads a model that `caxton model export --hf-cache`
wrote, with HF_HUB_OFFLINE=1, and embeds as caxton does (issue 22).

torch is not in the test command (5 GB), so this is a check script run with
the torch bench environment that benches/make_torch_env.sh makes:

    ~/.cache/caxton-bench-torch/bin/python benches/check_st_hf_export.py

It runs caxton in subprocesses with a Python that has caxton_models
(``--caxton-python``, default: this repository's .venv/bin/python; with
PYTHONPATH on this repository's python/ folder): installs the real
all-MiniLM-L6-v2 (from ``CAXTON_TEST_DATA``/models, default ../shared) into a
fresh caxton cache, exports it to a fresh Hugging Face cache, embeds the
texts; then, in this process, offline and pointed at that HF cache only,
``SentenceTransformer(repo_id)`` embeds the same texts. Every row's cosine
with caxton's must be >= 0.9999. Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
NAME = "all-MiniLM-L6-v2"
REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
MIN_COSINE = 0.9999
TEXTS = [
    "A man is eating food.",
    "The new movie is awesome",
    "query: how do I verify a downloaded model offline?",
    "Ein Mann isst ein Brot.",
    "A very long sentence " + "that keeps going " * 40 + "past the model's 256 tokens.",
    "",
]
_EMBED = """
import json, sys
import numpy as np
import caxton_models
emb = caxton_models.load(sys.argv[1], fallback=False)
np.save(sys.argv[2], emb.embed(json.loads(sys.argv[3])))
print(json.dumps({"model_id": emb.model_id, "revision": emb.revision}))
"""


def caxton_env(cache: Path) -> dict[str, str]:
    """caxton's subprocesses: this repository's code, a fresh cache, no network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CAXTON_"))}
    env["PYTHONPATH"] = str(REPO / "python")
    env["CAXTON_CACHE_DIR"] = str(cache)
    env["CAXTON_OFFLINE"] = "1"
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: any request fails
    return env


def run(cmd: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=900)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def caxton_side(python: str, minilm: Path, work: Path) -> tuple[np.ndarray, dict[str, Any], Path]:
    """Install, export to an HF cache, embed: caxton's vectors, the export's JSON, the HF cache."""
    cache, hub = work / "caxton-cache", work / "hf-hub"
    env = caxton_env(cache)
    cli = [python, "-m", "caxton_models"]
    run([*cli, "model", "install", "--model-id", NAME, "--source", str(minilm)], env)
    exported = json.loads(run([*cli, "model", "export", "--model-id", NAME,
                               "--hf-cache", str(hub), "--json"], env))  # fmt: skip
    out = work / "caxton.npy"
    made = json.loads(run([python, "-c", _EMBED, NAME, str(out), json.dumps(TEXTS)], env))
    exported["embedded_by"] = made
    return np.load(out), exported, hub


def st_side(hub: Path) -> np.ndarray:
    """sentence-transformers, offline, seeing only the exported HF cache."""
    for key in [k for k in os.environ if k.startswith("HF_")]:
        del os.environ[key]
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(hub)
    os.environ["HF_HOME"] = str(hub.parent / "hf-home")  # nothing of the user's
    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
    # Imported only now: huggingface_hub reads HF_HUB_CACHE once, when imported.
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    print(f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}")
    model = SentenceTransformer(REPO_ID, device="cpu")
    return np.asarray(model.encode(TEXTS, convert_to_numpy=True), dtype=np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--caxton-python", default=str(REPO / ".venv" / "bin" / "python"))
    shared = Path(os.environ.get("CAXTON_TEST_DATA", REPO.parent / "shared"))
    parser.add_argument("--minilm", type=Path, default=shared / "models" / NAME)
    args = parser.parse_args()
    if not (args.minilm / "config.json").is_file():
        sys.exit(f"{NAME} files not found at {args.minilm}: set CAXTON_TEST_DATA or --minilm")
    with tempfile.TemporaryDirectory(prefix="caxton-st-export.") as tmp:
        ours, exported, hub = caxton_side(args.caxton_python, args.minilm, Path(tmp))
        print("export:", json.dumps(exported, sort_keys=True))
        theirs = st_side(hub)
    if ours.shape != theirs.shape:
        print(f"FAIL: shapes differ: caxton {ours.shape}, sentence-transformers {theirs.shape}")
        return 1
    cos = np.sum(ours * theirs, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    for text, c in zip(TEXTS, cos, strict=True):
        print(f"  cosine {c:.6f}  {text[:50]!r}")
    ok = bool(np.all(cos >= MIN_COSINE))
    print(
        f"{'PASS' if ok else 'FAIL'}: SentenceTransformer({REPO_ID!r}) offline from the "
        f"exported HF cache; min cosine with caxton {cos.min():.6f} (>= {MIN_COSINE} needed), "
        f"max |diff| {np.abs(ours - theirs).max():.2e}, shape {ours.shape}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
