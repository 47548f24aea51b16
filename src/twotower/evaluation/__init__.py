"""Evaluation: top-K metrics, the recommend-and-evaluate protocol, baselines, reports."""

from twotower.evaluation.baselines import (BASELINE_GRIDS, BASELINES, EASE, EASEConfig,
                                           ItemKNN, ItemKNNConfig, MostPop, MostPopConfig,
                                           TuneResult, topk_excluding, tune)
from twotower.evaluation.metrics import (METRICS, HistoryRecommender, Recommender,
                                         as_truth_csr, coverage, evaluate_topk, hit_matrix,
                                         per_user_metrics, recommend_and_evaluate)
from twotower.evaluation.report import (format_table, plot_loss_curves, plot_recall_curves,
                                        recall_curve, table_metrics)
from twotower.evaluation.run import (evaluate_run, held_out_pairs, held_out_rows,
                                    train_interactions, trails_popular)

__all__ = [
    "BASELINE_GRIDS", "BASELINES", "EASE", "evaluate_run", "held_out_pairs", "held_out_rows",
    "train_interactions", "trails_popular", "EASEConfig", "HistoryRecommender", "ItemKNN", "ItemKNNConfig",
    "METRICS", "MostPop", "MostPopConfig", "Recommender", "TuneResult", "as_truth_csr",
    "coverage", "evaluate_topk", "format_table", "hit_matrix", "per_user_metrics",
    "plot_loss_curves", "plot_recall_curves", "recall_curve", "recommend_and_evaluate",
    "table_metrics", "topk_excluding", "tune",
]
