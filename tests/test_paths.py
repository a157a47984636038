"""Repo-path validation (RELIABILITY rows 28-32) and symlink-safe joins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from caxton_models._paths import check_name, check_repo_path, check_unique, safe_join
from caxton_models.errors import InvalidPath

GOOD = [
    "config.json",
    "onnx/model.onnx",
    "1_Pooling/config.json",
    ".gitattributes",
    "a/b/c/d.txt",
    "données/modèle.json",
    "file.with.dots.json",
]

BAD = [
    "",
    "../x",
    "a/../../x",
    "a/./b",
    "..\\x",
    "a\\b",
    "/etc/passwd",
    "C:\\x",
    "C:x",
    "c:/x",
    "\\\\host\\share\\x",
    "\\x",
    "a//b",
    "a/",
    "CON",
    "con",
    "nul.txt",
    "COM1",
    "lpt9.log",
    "COM¹",
    "dir/AUX/file",
    "trailing.",
    "trailing ",
    "a:b",
    "a<b",
    "a>b",
    "a|b",
    "a?b",
    "a*b",
    'a"b',
    "nul\x00byte",
    "tab\there",
    "del\x7f",
    "bidi\u202eevil",
    "x" * 256,
    "a/" * 600 + "b",
    "\ud800lone",
    ".caxton_metadata",
    "sub/.caxton_checksum",
]


@pytest.mark.parametrize("path", GOOD)
def test_good_paths_pass_unchanged(path: str) -> None:
    assert check_repo_path(path) == path


@pytest.mark.parametrize("path", BAD)
def test_bad_paths_are_invalid_path(path: str) -> None:
    with pytest.raises(InvalidPath) as exc:
        check_repo_path(path)
    # The message shows the name escaped, never raw control characters.
    assert "\x00" not in str(exc.value)
    assert "\u202e" not in str(exc.value)


@pytest.mark.parametrize("value", [None, 3, b"config.json", ["a"]])
def test_non_strings_are_invalid(value: object) -> None:
    with pytest.raises(InvalidPath):
        check_repo_path(value)


def test_component_of_255_bytes_is_allowed_256_not() -> None:
    assert check_repo_path("x" * 255)
    with pytest.raises(InvalidPath):
        check_repo_path("é" * 128)  # 256 bytes in UTF-8


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "bundled-mini", "m.v1", "a_b+c"])
def test_registry_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "-x", ".hidden", "downloads/x", "x y", "CON"])
def test_bad_registry_names(name: str) -> None:
    with pytest.raises(InvalidPath):
        check_name(name)


def test_check_unique_refuses_case_and_nfc_twins() -> None:
    with pytest.raises(InvalidPath, match="collides"):
        check_unique(["Config.json", "config.json"])
    with pytest.raises(InvalidPath, match="collides"):
        check_unique(["caf\u00e9.txt", "cafe\u0301.txt"])
    with pytest.raises(InvalidPath, match="both a file and a directory"):
        check_unique(["onnx", "onnx/model.onnx"])
    assert check_unique(["a/b", "a/c", "b"]) == ["a/b", "a/c", "b"]


def test_check_unique_rejects_whole_set_for_one_bad_name() -> None:
    with pytest.raises(InvalidPath):
        check_unique(["config.json", "../../etc/x", "tokenizer.json"])


def test_safe_join_refuses_symlinked_component(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "onnx")
    with pytest.raises(InvalidPath, match="symlink"):
        safe_join(root, "onnx/model.onnx")
    os.symlink(outside / "f", root / "leaf")
    with pytest.raises(InvalidPath, match="symlink"):
        safe_join(root, "leaf")
    (root / "file").write_text("x")
    with pytest.raises(InvalidPath, match="not a directory"):
        safe_join(root, "file/x")
    assert safe_join(root, "new/dir/f.json") == root / "new" / "dir" / "f.json"
