"""docs/cost.md is what `make cost` renders from its run's snapshot (docs/cost.json), and that run meets
the acceptance bound of issue 11: at 1,000,000 bindings the kms store's credential-store cost is at
most 1% of Secrets Manager's."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.cost import MAX_RATIO, STORES, model, render_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def snapshot() -> dict:
    return json.loads((DOCS / "cost.json").read_text())


def test_cost_page_is_rendered_from_the_snapshot():
    assert (DOCS / "cost.md").read_text() == render_markdown(snapshot()), (
        "run `make cost` to measure again and regenerate docs/cost.md and docs/cost.json"
    )


def test_snapshot_figures_are_the_model_of_its_measurements():
    data = snapshot()
    recomputed = model(data)
    assert recomputed["monthly"] == data["monthly"]
    assert recomputed["ratio_at_largest"] == data["ratio_at_largest"]


def test_kms_store_costs_at_most_one_percent_of_secrets_manager_at_a_million():
    data = snapshot()
    assert data["largest"] == 1_000_000
    assert set(data["measured"]) == set(STORES)
    assert data["ratio_at_largest"] <= MAX_RATIO
