"""Reading caxton_models.metrics from tests: sums over the exposition, so a
test can compare counts before and after what it does (the registry is
process-wide)."""

from __future__ import annotations

from caxton_models import metrics

DOWNLOADS = "caxton_model_download_duration_seconds_count"


def total(name: str, **match: str) -> float:
    """The sum of every sample called ``name`` whose labels include ``match``."""
    from prometheus_client.parser import text_string_to_metric_families

    out = 0.0
    for family in text_string_to_metric_families(metrics.exposition()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in match.items()):
                out += sample.value
    return out
