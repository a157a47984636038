"""The one Rust->Python error seam: every class the core can raise exists in
``caxton_models.errors`` and takes the fields the core hands it."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from caxton_models import _core, errors
from caxton_models.errors import CaxtonError, InvalidArgument


def test_every_class_the_core_names_is_in_errors_py() -> None:
    names = _core._error_classes()
    assert names, "the core lists no domain classes"
    for name in names:
        cls = getattr(errors, name, None)
        assert isinstance(cls, type), f"the core raises {name}, which errors.py lacks"
        assert issubclass(cls, CaxtonError)


def test_every_sample_round_trips_class_and_fields() -> None:
    samples = _core._error_samples()
    seen: set[str] = set()
    for index, (module, name, fields) in enumerate(samples):
        home = builtins if module == "builtins" else errors
        assert module in ("builtins", "caxton_models.errors")
        expected = getattr(home, name)
        with pytest.raises(BaseException) as info:
            _core._raise_error_sample(index)
        # Exactly the class: a class that refuses a field would fall back to
        # RuntimeError, which must not pass as a subclass of anything.
        assert type(info.value) is expected, (index, name, type(info.value))
        assert str(info.value)
        for key, value in fields.items():
            assert getattr(info.value, key) == value, (name, key)
        if module != "builtins":
            seen.add(name)
    assert seen == set(_core._error_classes()), "a domain class has no sample"


def test_an_unknown_sample_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no error sample"):
        _core._raise_error_sample(10_000)


def test_download_many_refuses_a_misspelt_key(tmp_path: Path) -> None:
    # Misspelt "sha256": before, the file was fetched with no hash check.
    item = {"url": "http://127.0.0.1:9/f", "dest": str(tmp_path / "f"), "sha265": "0" * 64}
    with pytest.raises(InvalidArgument, match='"sha265"') as info:
        _core.download_many([item])  # type: ignore[list-item]
    assert "sha256" in str(info.value)  # names the keys that exist
    assert not (tmp_path / "f").exists()


def test_download_many_names_a_missing_key(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match='"url"'):
        _core.download_many([{"dest": str(tmp_path / "f")}])  # type: ignore[typeddict-item]
