"""How many tokens a model folder takes: the one rule the embedder, the task heads and
the sentence-transformers pipeline reader all use.

sentence-transformers' ``max_seq_length`` (``sentence_bert_config.json``) wins, else the
tokenizer's ``model_max_length`` (a value this large is transformers' "no limit");
either is capped by the rows of the position table a sequence can use. RoBERTa-style
models number positions from ``padding_idx + 1``, so a 514-row table holds 512 tokens:
a folder that said nothing else got 514 from one rule and 512 from another before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_MAX_LENGTH", "max_sequence_length"]

#: What a folder that states no limit at all gets (BERT's table).
DEFAULT_MAX_LENGTH = 512
#: Above this, tokenizer_config's model_max_length is transformers' "no limit".
_NO_LIMIT = 1_000_000
#: model_type -> the padding id its positions start after, when config.json gives none.
_POSITIONS_AFTER_PADDING = {"roberta": 1, "xlm-roberta": 1, "camembert": 1, "mpnet": 1}


def _count(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < _NO_LIMIT
    return value if ok else None


def usable_positions(hf_config: Mapping[str, Any]) -> int | None:
    """The tokens config.json's position table holds, or None when it does not say."""
    positions = _count(hf_config.get("max_position_embeddings"))
    if positions is None:
        return None
    model_type = hf_config.get("model_type")
    if model_type not in _POSITIONS_AFTER_PADDING:
        return positions
    pad = _POSITIONS_AFTER_PADDING[model_type]
    if model_type != "mpnet":  # MPNet's position ids start at 2 whatever pad_token_id says
        pad = _count(hf_config.get("pad_token_id")) or pad
    return max(1, positions - pad - 1)


def max_sequence_length(
    st_config: Mapping[str, Any],
    hf_config: Mapping[str, Any],
    tokenizer_config: Mapping[str, Any],
) -> int | None:
    """The folder's limit from its three config files (the parsed JSON of each; ``{}``
    for a missing one), or None when none of them states one."""
    stated = _count(st_config.get("max_seq_length"))
    if stated is None:
        stated = _count(tokenizer_config.get("model_max_length"))
    limits = [v for v in (stated, usable_positions(hf_config)) if v is not None]
    return min(limits) if limits else None
