"""Opening "without following links" is written once (store/_fs.open_regular) and every
reader refuses the same things the same way: a symlink (OSError), and anything but a
regular file (InvalidPath). Before, four copies: the JSON reader raised a bare
ValueError for a device, and a FIFO planted in the cache blocked every reader forever
waiting for a writer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from caxton_models.errors import InvalidPath
from caxton_models.ops.archive import read_manifest
from caxton_models.store import copy_nofollow, open_regular, read_json_nofollow

READERS: dict[str, Callable[[Path, Path], object]] = {
    "open_regular": lambda p, _: open_regular(p).close(),
    "read_json_nofollow": lambda p, _: read_json_nofollow(p),
    "copy_nofollow": lambda p, tmp: copy_nofollow(p, tmp / "copy"),
    "read_manifest": lambda p, _: read_manifest(p, source="test"),
}


@pytest.mark.parametrize("reader", READERS)
def test_a_symlink_is_refused(reader: str, tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("{}", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(OSError):
        READERS[reader](link, tmp_path)


@pytest.mark.parametrize("reader", READERS)
def test_a_device_is_an_invalid_path(reader: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidPath, match="not a regular file"):
        READERS[reader](Path(os.devnull), tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
@pytest.mark.timeout(20)
@pytest.mark.parametrize("reader", READERS)
def test_a_fifo_is_refused_at_once(reader: str, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(InvalidPath, match="not a regular file"):
        READERS[reader](fifo, tmp_path)
    assert not (tmp_path / "copy").exists()


def test_a_regular_file_reads(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('{"a": 1}', encoding="utf-8")
    assert read_json_nofollow(path) == {"a": 1}
    copy_nofollow(path, tmp_path / "b.json")
    assert (tmp_path / "b.json").read_bytes() == path.read_bytes()
