"""``twotower.evaluation.run``'s held-out check against MostPop (what `train` reports)."""

from __future__ import annotations

import numpy as np

from twotower.evaluation import trails_popular


def test_trails_popular_warns_only_when_the_model_is_behind():
    popular = {"recall@10": 0.12, "ndcg@10": 0.2, "users": 50}
    behind = trails_popular({"recall@10": 0.008, "users": 50}, popular)
    assert behind is not None and "recall@10 0.0080 against MostPop's 0.1200" in behind
    assert "see README, Quality" in behind
    assert trails_popular({"recall@10": 0.12}, popular) is None  # level: not behind
    assert trails_popular({"recall@10": 0.3}, popular) is None
    # no user scored (NaN / None), or the cut-off not reported: nothing to say
    assert trails_popular({"recall@10": float("nan")}, popular) is None
    assert trails_popular({"recall@10": None}, popular) is None
    assert trails_popular({"recall@3": 0.0}, {"recall@3": 0.5}, k=3) is not None
    assert trails_popular({"recall@3": np.float64(0.0)}, popular) is None
