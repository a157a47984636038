"""Prompts, as sentence-transformers applies them, and Matryoshka widths.

A model's ``config_sentence_transformers.json`` names its prompts
(``{"query": "Instruct: ...\\nQuery: ", "document": ""}``) and, optionally,
a ``default_prompt_name`` used when the caller names none. A prompt is
prepended to each text; with ``include_prompt: false`` in the Pooling
config its tokens are left out of the pooling (not out of the model's
input). The registry's query/passage prefixes (e5-style models) are one
case of this: they are the prompts ``query`` and ``passage``.

``kind`` maps onto the names as ``encode_query`` / ``encode_document`` do:
``query`` uses the ``query`` prompt if the model has one; ``passage`` the
first of ``document``, ``passage``, ``corpus`` it has; either falls back to
the default prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caxton_models.errors import InvalidArgument, InvalidModelFormat

__all__ = ["Prompts", "check_dimensions", "prompt_length", "read_prompts"]

log = logging.getLogger("caxton_models.runtime")

#: sentence-transformers' encode_document looks for these, in order.
_DOCUMENT_NAMES = ("document", "passage", "corpus")


@dataclass(frozen=True)
class Prompts:
    """A model's prompts and the one applied when none is named."""

    prompts: Mapping[str, str] = field(default_factory=dict)
    default_name: str | None = None

    def __post_init__(self) -> None:
        if self.default_name is not None and self.default_name not in self.prompts:
            raise InvalidModelFormat(
                f"default_prompt_name {self.default_name!r} is not one of the prompts "
                f"{sorted(self.prompts)}: fix config_sentence_transformers.json"
            )

    @property
    def default(self) -> str | None:
        return self.prompts[self.default_name] if self.default_name is not None else None

    def merged(self, overrides: Mapping[str, str] | None) -> Prompts:
        """These prompts with ``overrides`` (the registry's or the caller's)
        winning; an empty override never hides the model's own prompt."""
        if not overrides:
            return self
        prompts = dict(self.prompts)
        prompts.update({k: v for k, v in overrides.items() if v})
        return Prompts(prompts, self.default_name)

    def name_for_kind(self, kind: str) -> str | None:
        """The model's prompt for queries or documents, as ``encode_query`` /
        ``encode_document`` pick it (None: it has none)."""
        names = ("query",) if kind == "query" else _DOCUMENT_NAMES
        return next((n for n in names if n in self.prompts), None)

    def for_kind(self, kind: str) -> str | None:
        """The prompt ``embed(kind=...)`` applies."""
        name = self.name_for_kind(kind)
        return self.prompts[name] if name is not None else self.default

    def resolve(self, prompt_name: str | None, prompt: str | None) -> str | None:
        """sentence-transformers' choice: ``prompt`` wins over ``prompt_name``
        (with a warning when both are given), a name must be one of the
        model's, and with neither the default prompt applies."""
        if prompt is not None:
            if prompt_name is not None:
                log.warning(
                    "both prompt and prompt_name given: prompt_name %r ignored", prompt_name
                )
            if not isinstance(prompt, str):
                raise InvalidArgument(f"prompt must be a str, not {type(prompt).__name__}")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise InvalidArgument(
                    f"prompt_name {prompt_name!r} is not one of this model's prompts "
                    f"{sorted(self.prompts)} (config_sentence_transformers.json and the "
                    "registry's prefixes); pass prompt='...' to give the text yourself"
                )
            return self.prompts[prompt_name]
        return self.default


def read_prompts(raw: Any, where: Path) -> Prompts:
    """The prompts of a parsed ``config_sentence_transformers.json`` (None: no file)."""
    if raw is None:
        return Prompts()
    if not isinstance(raw, dict):
        raise InvalidModelFormat(f"{where} is not a JSON object")
    prompts = raw.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise InvalidModelFormat(f"{where}: 'prompts' must map names to strings")
    default = raw.get("default_prompt_name")
    if default is not None and not isinstance(default, str):
        raise InvalidModelFormat(f"{where}: 'default_prompt_name' must be a string or null")
    try:
        return Prompts(dict(prompts), default)
    except InvalidModelFormat as e:
        raise InvalidModelFormat(f"{where}: {e}") from None


def prompt_length(tokenizer: Any, prompt: str) -> int:
    """sentence-transformers' prompt length (the columns ``include_prompt:
    false`` leaves out of the pooling): the prompt's tokens with the special
    tokens the post-processor puts around them, less a special one at the end."""
    enc = tokenizer.encode(prompt)
    return len(enc.ids) - (1 if enc.special_tokens_mask[-1:] == [1] else 0)


def check_dimensions(model: str, full: int, dimensions: int | None) -> int:
    """The Matryoshka width asked for, refused above what the model makes."""
    if dimensions is None:
        return full
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise InvalidArgument(f"dimensions must be a positive whole number, not {dimensions!r}")
    if dimensions > full:
        raise InvalidArgument(
            f"{model} makes {full}-dimensional vectors: dimensions={dimensions} cannot be "
            f"had (Matryoshka truncation keeps the first 1..{full})"
        )
    return dimensions
