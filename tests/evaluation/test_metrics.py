"""Top-K metrics: hand-worked cases, a per-user reference, the protocol, and reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from twotower.data import Interactions, held_out_users_split
from twotower.errors import ConfigError, DataError
from twotower.evaluation import (EASE, evaluate_topk, format_table, hit_matrix,
                                 per_user_metrics, plot_recall_curves, recall_curve,
                                 recommend_and_evaluate)


def d(rank: int) -> float:
    """DCG discount of a 0-based rank."""
    return 1.0 / math.log2(rank + 2)


# -- hand-worked cases ------------------------------------------------------------------

def test_perfect_list():
    r = evaluate_topk(np.array([[4, 2, 0]]), [np.array([0, 2, 4])], ks=(3,), n_items=5)
    assert r["recall@3"] == 1.0 and r["ndcg@3"] == pytest.approx(1.0)
    assert r["hit_rate@3"] == 1.0 and r["mrr@3"] == 1.0
    assert r["coverage@3"] == pytest.approx(3 / 5) and r["users"] == 1


def test_no_hit():
    r = evaluate_topk(np.array([[1, 3]]), [np.array([0])], ks=(1, 2), n_items=4)
    for key in ("recall@2", "ndcg@2", "hit_rate@2", "mrr@2", "recall@1"):
        assert r[key] == 0.0


def test_empty_truth_users_are_excluded():
    top = np.array([[0, 1], [2, 3]])
    r = evaluate_topk(top, [np.array([1]), np.array([], dtype=np.int64)], ks=(2,), n_items=4)
    assert r["users"] == 1 and r["recall@2"] == 1.0
    assert r["coverage@2"] == pytest.approx(2 / 4)  # only the evaluated user's list counts
    none = evaluate_topk(top, [np.array([], dtype=np.int64)] * 2, ks=(2,), n_items=4)
    assert none["users"] == 0 and math.isnan(none["recall@2"])


def test_padding_and_repeats_never_hit_twice():
    # -1 is padding; a repeated relevant item counts at its first position only
    r = evaluate_topk(np.array([[-1, 2, 2, -1]]), [np.array([2, 3])], ks=(4,), n_items=4)
    assert r["recall@4"] == pytest.approx(0.5)
    assert r["ndcg@4"] == pytest.approx(d(1) / (d(0) + d(1)))
    assert r["mrr@4"] == pytest.approx(0.5)
    assert r["coverage@4"] == pytest.approx(1 / 4)


def test_recall_is_hits_over_all_relevant():
    # 5 relevant, K=2, both hit: recall 2/5 (not 2/min(K, 5)); ideal DCG over 2 items
    r = evaluate_topk(np.array([[0, 1]]), [np.arange(5)], ks=(2,), n_items=6)
    assert r["recall@2"] == pytest.approx(0.4)
    assert r["ndcg@2"] == pytest.approx(1.0)


def test_two_users_by_hand():
    top = np.array([[5, 2, 7, 1],
                    [3, -1, -1, -1],
                    [0, 1, 2, 3]])
    truth = sp.csr_matrix(np.array([
        [0, 1, 1, 0, 0, 0, 0, 0, 0, 1],   # {1, 2, 9}
        [0, 0, 0, 1, 0, 0, 0, 0, 0, 0],   # {3}
        [0] * 10,                         # none: left out
    ], dtype=np.float32))
    r = evaluate_topk(top, truth, ks=(2, 4))
    u0 = {"recall@2": 1 / 3, "recall@4": 2 / 3,
          "ndcg@2": d(1) / (d(0) + d(1)), "ndcg@4": (d(1) + d(3)) / (d(0) + d(1) + d(2)),
          "hit_rate@2": 1.0, "hit_rate@4": 1.0, "mrr@2": 0.5, "mrr@4": 0.5}
    u1 = dict.fromkeys(u0, 1.0)
    for key in u0:
        assert r[key] == pytest.approx((u0[key] + u1[key]) / 2), key
    assert r["coverage@2"] == pytest.approx(3 / 10)   # {5, 2, 3}
    assert r["coverage@4"] == pytest.approx(5 / 10)   # {5, 2, 7, 1, 3}
    assert r["users"] == 2
    per = per_user_metrics(top, truth, ks=(2, 4))
    assert per["recall@4"][0] == pytest.approx(2 / 3) and math.isnan(per["recall@4"][2])
    assert per["n_relevant"].tolist() == [3, 1, 0]


def test_truth_as_lists_equals_truth_as_csr():
    top = np.array([[1, 0], [2, 1]])
    lists = [np.array([0]), np.array([1, 2])]
    csr = sp.csr_matrix((np.ones(3), ([0, 1, 1], [0, 1, 2])), shape=(2, 3))
    assert evaluate_topk(top, lists, ks=(2,), n_items=3) == evaluate_topk(top, csr, ks=(2,))


def test_bad_inputs_are_named():
    truth = [np.array([0])]
    with pytest.raises(ConfigError, match="ks"):
        evaluate_topk(np.array([[0, 1]]), truth, ks=(10,), n_items=3)
    with pytest.raises(DataError, match="top_ids"):
        evaluate_topk(np.array([[0, 7]]), truth, ks=(1,), n_items=3)
    with pytest.raises(DataError, match="rows"):
        evaluate_topk(np.array([[0], [1]]), truth, ks=(1,), n_items=3)
    with pytest.raises(ConfigError, match="ks"):
        evaluate_topk(np.array([[0]]), truth, ks=(0,), n_items=3)


# -- agreement with a plain per-user reference ----------------------------------------------

def reference(top: np.ndarray, truth: list[set[int]], ks, n_items: int) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    evaluated = [u for u in range(len(truth)) if truth[u]]
    for k in ks:
        for u in evaluated:
            rel, seen, hits, dcg, rr = truth[u], set(), 0, 0.0, 0.0
            for rank, item in enumerate(top[u, :k].tolist()):
                if item < 0 or item in seen:
                    continue
                seen.add(item)
                if item in rel:
                    hits += 1
                    dcg += d(rank)
                    rr = rr or 1.0 / (rank + 1)
            idcg = sum(d(i) for i in range(min(k, len(rel))))
            out.setdefault(f"recall@{k}", []).append(hits / len(rel))
            out.setdefault(f"ndcg@{k}", []).append(dcg / idcg)
            out.setdefault(f"hit_rate@{k}", []).append(float(hits > 0))
            out.setdefault(f"mrr@{k}", []).append(rr)
        items = {i for u in evaluated for i in top[u, :k].tolist() if i >= 0}
        out[f"coverage@{k}"] = [len(items) / n_items]
    res = {key: float(np.mean(v)) for key, v in out.items()}
    res["users"] = float(len(evaluated))
    return res


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, width = 60, 40, 15
    top = rng.integers(-1, n_items, size=(n_users, width))  # with padding and repeats
    truth = [set(rng.choice(n_items, size=rng.integers(0, 12), replace=False).tolist())
             for _ in range(n_users)]
    lists = [np.array(sorted(t), dtype=np.int64) for t in truth]
    got = evaluate_topk(top, lists, ks=(1, 5, 15), n_items=n_items)
    want = reference(top, truth, (1, 5, 15), n_items)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_truth_rows_that_are_not_integer_item_indices_are_refused():
    """A list truth row was cast to int64: a float index 1.9 was scored as item 1, and a
    dense 0/1 relevance matrix (item 2 relevant) was read as the item indices 0 and 1, so
    a list holding item 0 scored recall 1 instead of 0."""
    with pytest.raises(DataError, match="truth row 0 must hold integer item indices"):
        evaluate_topk(np.array([[1, 0]]), [np.array([1.9])], ks=(2,), n_items=3)
    with pytest.raises(DataError, match="csr_matrix"):
        evaluate_topk(np.array([[0, 1]]), np.array([[0.0, 0.0, 1.0]]), ks=(2,), n_items=3)
    with pytest.raises(DataError, match="truth row 1 .* bool"):
        evaluate_topk(np.array([[0], [1]]), [np.array([2]), np.array([False, True])],
                      ks=(1,), n_items=3)
    # integer rows, Python lists and empty rows are read as before
    r = evaluate_topk(np.array([[2, 0], [1, 0]]), [[2], []], ks=(2,), n_items=3)
    assert r["recall@2"] == 1.0 and r["users"] == 1.0


def test_hit_matrix_marks_first_occurrence():
    h = hit_matrix(np.array([[3, 3, 1, 0]]), [np.array([3, 0])], n_items=4)
    assert h.tolist() == [[True, False, False, True]]


def test_list_truth_needs_the_catalogue_size():
    """Without ``n_items`` a list truth's catalogue was guessed from its largest index:
    listed items beyond it were refused with that range, and coverage was a share of the
    guess (0.5 of 6 items where it is 0.003 of 1,000)."""
    with pytest.raises(DataError, match="needs `n_items`"):
        evaluate_topk(np.array([[1, 2, 3]]), [np.array([1])], ks=(3,))
    r = evaluate_topk(np.array([[0, 1, 2]]), [np.array([5])], ks=(3,), n_items=1000)
    assert r["coverage@3"] == pytest.approx(3 / 1000)


def test_943_users_top100_lists_and_sparse_truth_agree():
    rng = np.random.default_rng(0)
    n_users, n_items = 943, 1682
    top = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :100]
    truth = sp.random(n_users, n_items, density=0.012, format="csr", random_state=0)
    lists = [truth.indices[truth.indptr[u]:truth.indptr[u + 1]] for u in range(n_users)]
    got = evaluate_topk(top, truth, ks=(10, 20, 50, 100))
    assert got == evaluate_topk(top, lists, ks=(10, 20, 50, 100), n_items=n_items)
    assert got["users"] > 900 and 0 < got["recall@100"] < 1


# -- the protocol ---------------------------------------------------------------------------

class Spy:
    """Recommends items 0, 1, 2, ... minus the exclusions; records what it was asked."""

    def __init__(self, n_items: int) -> None:
        self.n_items, self.calls = n_items, []

    def fit(self, train):
        return self

    def _lists(self, n, k, exclude):
        ids = np.full((n, k), -1, dtype=np.int64)
        for row in range(n):
            keep = np.setdiff1d(np.arange(self.n_items), exclude[row])[:k]
            ids[row, :len(keep)] = keep
        return np.zeros((n, k), np.float32), ids

    def recommend(self, users, k, exclude=None):
        self.calls.append(("users", np.asarray(users).tolist(), k, [e.tolist() for e in exclude]))
        return self._lists(len(users), k, exclude)

    def recommend_from_history(self, histories, k, exclude=None):
        self.calls.append(("history", [h.tolist() for h in histories], k,
                           [e.tolist() for e in exclude]))
        return self._lists(len(histories), k, exclude)


def test_protocol_excludes_train_items_and_drops_unreachable_truth():
    vocab = dict(user_vocab=None, item_vocab=None)
    full = Interactions.from_ids([0, 0, 1, 1, 2], [0, 1, 2, 3, 4], **vocab)
    train = full.take(np.array([0, 2]))    # user0: item0, user1: item2
    test = full.take(np.array([1, 3]))     # user0: item1, user1: item3
    spy = Spy(full.n_items)
    r = recommend_and_evaluate(spy, train, test, ks=(1, 3), return_lists=True)
    kind, users, k, exclude = spy.calls[0]
    assert kind == "users" and users == [0, 1] and k == 3 and exclude == [[0], [2]]
    # user0 gets [1, 2, 3] (hit at rank 0); user1 gets [0, 1, 3] (hit at rank 2)
    assert r["recall@1"] == pytest.approx(0.5) and r["mrr@3"] == pytest.approx((1 + 1 / 3) / 2)
    assert r["lists"]["top_ids"].tolist() == [[1, 2, 3], [0, 1, 3]]
    # a test item that is also a train item can never be recommended: not counted
    r2 = recommend_and_evaluate(spy, full, test, ks=(1,))
    assert r2["users"] == 0


def test_protocol_held_out_users_use_history_in_time_order():
    x = Interactions.from_ids([0, 0, 0, 1, 1], [0, 1, 2, 0, 3], timestamps=[30, 10, 20, 1, 2])
    history = x.take(np.array([0, 1, 3]))   # user0: items 1 (t10), 0 (t30); user1: item 0
    test = x.take(np.array([2, 4]))
    spy = Spy(x.n_items)
    recommend_and_evaluate(spy, x.take(np.zeros(0, dtype=np.int64)), test, ks=(2,),
                           history=history)
    kind, histories, k, exclude = spy.calls[0]
    assert kind == "history" and histories == [[1, 0], [0]] and exclude == histories


def test_protocol_places_a_repeated_history_item_at_its_latest_interaction():
    """A held-out user's item seen at t1 and again at t3 was placed at t1 (b, at t2, then
    counted as the latest), where the history table and a served by-history query place
    it at t3."""
    x = Interactions.from_ids([0, 0, 0, 0], [5, 6, 5, 7], timestamps=[1, 2, 3, 9])
    history, test = x.take(np.array([0, 1, 2])), x.take(np.array([3]))
    spy = Spy(x.n_items)
    recommend_and_evaluate(spy, x.take(np.zeros(0, dtype=np.int64)), test, ks=(1,),
                           history=history)
    a, b = (int(i) for i in x.item_vocab.lookup([5, 6]))
    assert spy.calls[0][1] == [[b, a]]  # oldest first: 6 (t2), then 5 (latest at t3)


def test_protocol_pads_when_k_exceeds_catalogue():
    x = Interactions.from_ids([0, 0, 1, 1], [0, 1, 2, 0])
    r = recommend_and_evaluate(Spy(3), x.take(np.array([0, 3])), x.take(np.array([1, 2])),
                               ks=(10,), return_lists=True)
    assert r["lists"]["top_ids"].shape == (2, 10) and r["recall@10"] == 1.0


def test_protocol_held_out_split_with_ease():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(60), 8)
    items = np.concatenate([rng.choice(10, 8, replace=False) + 10 * (u % 2) for u in range(60)])
    x = Interactions.from_ids(users, items, timestamps=np.arange(len(users)))
    s = held_out_users_split(x, user_fraction=0.3, seed=1)
    # each held-out user has 3 unseen items in their block (1 test + 2 never rated)
    r = recommend_and_evaluate(EASE(lambda_=10.0).fit(s.train), s.train, s.test, ks=(3,),
                               history=s.history)
    assert r["users"] > 0 and r["recall@3"] == pytest.approx(1.0)


def test_protocol_rejects_empty_test():
    x = Interactions.from_ids([0], [0])
    with pytest.raises(DataError, match="test"):
        recommend_and_evaluate(Spy(1), x, x.take(np.zeros(0, dtype=np.int64)))



def test_protocol_rejects_mismatched_vocabularies():
    from twotower.data import Vocabulary
    x = Interactions.from_ids([0, 0, 1, 1], [0, 1, 2, 3])
    # same catalogue size, other users: indices 0 and 1 name users 900 and 950 in test
    other = Interactions.from_ids([900, 950], [1, 2], user_vocab=Vocabulary(
        np.arange(1000), name="user"), item_vocab=x.item_vocab)
    with pytest.raises(DataError, match="train and test must use the same user vocabulary"):
        recommend_and_evaluate(Spy(x.n_items), x, other)
    # same size, items in another order: every index names another item
    shuffled = Interactions.from_ids([0, 1], [1, 2], user_vocab=x.user_vocab,
                                     item_vocab=Vocabulary(np.array([3, 2, 1, 0]), name="item"))
    with pytest.raises(DataError, match="train and test must use the same item vocabulary"):
        recommend_and_evaluate(Spy(x.n_items), x, shuffled)
    # held-out users: their indices are the history's
    with pytest.raises(DataError, match="history and test must use the same user vocabulary"):
        recommend_and_evaluate(Spy(x.n_items), x, other, history=x)
    # a model that keeps vocabularies must share them with the data it is scored on
    model = Spy(x.n_items)
    model.user_vocab, model.item_vocab = x.user_vocab, shuffled.item_vocab
    with pytest.raises(DataError, match="the model and test must use the same item vocabulary"):
        recommend_and_evaluate(model, x, x.take(np.array([1, 3])))
    model.item_vocab = x.item_vocab
    assert recommend_and_evaluate(model, x.take(np.array([0, 2])), x.take(np.array([1, 3])),
                                  ks=(1,))["users"] == 2


# -- reports ---------------------------------------------------------------------------------

def test_format_table():
    text = format_table({"EASE": {"recall@10": (0.23456, 0.0012), "ndcg@10": 0.4},
                         "Pop": {"recall@10": float("nan")}}, ["recall@10", "ndcg@10"])
    lines = text.strip().splitlines()
    assert lines[0] == "| method | recall@10 | ndcg@10 |"
    assert lines[2] == "| EASE | 0.235 ± 0.001 | 0.400 |"
    assert lines[3] == "| Pop | – | – |"


def test_table_metrics_follow_the_cutoffs():
    from twotower.evaluation import table_metrics
    from twotower.evaluation.report import DEFAULT_TABLE_METRICS
    assert table_metrics([100, 10]) == DEFAULT_TABLE_METRICS
    assert table_metrics([20, 5, 20]) == ("recall@5", "ndcg@5", "recall@20", "hit_rate@5",
                                          "mrr@5", "coverage@5")
    assert table_metrics([7]) == ("recall@7", "ndcg@7", "hit_rate@7", "mrr@7", "coverage@7")


def test_recall_curve_and_plot(tmp_path):
    top = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    curve = recall_curve(top, [np.array([0, 1]), np.array([0])], ks=(1, 2, 4), n_items=4)
    assert curve == {1: pytest.approx(0.25), 2: pytest.approx(0.5), 4: pytest.approx(1.0)}
    path = plot_recall_curves({"a": curve, "b": {1: 0.1, 4: 0.3}}, tmp_path / "sub" / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plot_is_written_in_the_format_its_name_says(tmp_path):
    """PNG data was written under any name: `--plot r.svg` gave a PNG named .svg."""
    from twotower.errors import ConfigError
    curves = {"a": {1: 0.1, 4: 0.3}}
    assert plot_recall_curves(curves, tmp_path / "r.svg").read_text().lstrip().startswith(
        "<?xml")
    assert plot_recall_curves(curves, tmp_path / "r.pdf").read_bytes()[:5] == b"%PDF-"
    assert plot_recall_curves(curves, tmp_path / "r").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match=r"'\.txt' is not an image format; name the file "
                                          r"\.png, \.svg"):
        plot_recall_curves(curves, tmp_path / "r.txt")
    assert not (tmp_path / "r.txt").exists()


def test_a_plot_that_fails_midway_leaves_the_previous_one(tmp_path, monkeypatch):
    """A plot was written in place: a full disk (or Ctrl-C) midway left the previous image
    cut short. Now the previous file stays whole, no temporary file is left, and the
    error names the file."""
    import errno
    import re
    from pathlib import Path

    from matplotlib.figure import Figure
    out = tmp_path / "r.png"
    out.write_bytes(b"previous")

    def cut(self, fname, *a, **kw):
        Path(fname).write_bytes(b"\x89PNG")  # the disk fills after 4 bytes
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Figure, "savefig", cut)
    with pytest.raises(OSError, match=rf"cannot write {re.escape(str(out))}: No space left "
                                      rf"on device; {re.escape(str(out))} is unchanged"):
        plot_recall_curves({"a": {1: 0.1, 4: 0.3}}, out)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]


def test_loss_plot(tmp_path):
    from twotower.errors import DataError
    from twotower.evaluation import plot_loss_curves
    path = plot_loss_curves({"loss": [0.9, 0.5, 0.4, 0.35], "val_loss": [0.45, 0.4],
                             "recall": [0.1]}, tmp_path / "l" / "loss.png", validation_freq=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(DataError, match="no loss values"):
        plot_loss_curves({"recall": [0.1]}, tmp_path / "x.png")


def test_plots_tick_whole_epochs_and_cut_offs(tmp_path, monkeypatch):
    """The x axis counts epochs and K: a one-epoch loss plot read 0.96, 0.98, 1.00, 1.02,
    1.04 epochs, a three-epoch one 1.25, 1.50, ..., a recall curve at K 1 and 4 K 1.5, ..."""
    from matplotlib.figure import Figure

    from twotower.evaluation import plot_loss_curves
    ticks, real = [], Figure.savefig

    def spy(self, *a, **kw):
        ax = self.axes[0]
        lo, hi = ax.get_xlim()
        ticks.append([float(t) for t in ax.get_xticks() if lo <= t <= hi])
        return real(self, *a, **kw)
    monkeypatch.setattr(Figure, "savefig", spy)
    plot_loss_curves({"loss": [0.9]}, tmp_path / "one.png")
    plot_loss_curves({"loss": [0.9, 0.5, 0.4], "val_loss": [0.45]}, tmp_path / "three.png",
                     validation_freq=2)
    plot_recall_curves({"a": {1: 0.1, 4: 0.3}}, tmp_path / "r.png")
    assert len(ticks) == 3 and all(ticks), ticks
    assert all(t.is_integer() for shown in ticks for t in shown), ticks
    assert ticks[0] == [1.0]


def test_evaluate_runs_progress_lines_share_one_clock(monkeypatch, ml100k):
    """The line a baseline's final fit ticks counted from that fit's start: "fitting EASE
    on all of train (187 s so far)", then "baselines: fitting EASE on all of train, 10 s
    so far". Every line now counts from the evaluation's start, as the tuning ticker's
    does. (Clock 100x fast; a tick every 10 ms; ItemKNN's fits made slow.)"""
    import re
    import time

    import twotower.evaluation.baselines as base_mod
    import twotower.evaluation.run as run_mod
    import twotower.models._ticker as ticker_mod
    from twotower import TwoTower
    from twotower.data import random_split
    from twotower.models import ModelConfig
    real_clock, real_ticker, real_fit = time.perf_counter, ticker_mod.Ticker, base_mod.ItemKNN.fit
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() * 100)

    class Often(real_ticker):
        def __init__(self, what, every_s=10.0, *a, **kw):
            super().__init__(what, 0.01, *a, **kw)
    monkeypatch.setattr(ticker_mod, "Ticker", Often)
    monkeypatch.setattr(base_mod.ItemKNN, "fit",
                        lambda self, t: time.sleep(0.05) or real_fit(self, t))
    split = random_split(ml100k.take(ml100k.users < 60), 0.2, seed=0)
    model = TwoTower(ModelConfig.preset("tutorial", epochs=1)).fit(split.train, verbose=0)
    lines: list[str] = []
    run_mod.evaluate_run(model, (split.test.users, split.test.items), ks=(10,),
                         baselines=True, log=lines.append)

    def seconds(line):
        m = re.search(r"(?:(\d+) min )?(\d+) s so far", line)
        return int(m.group(1) or 0) * 60 + int(m.group(2))
    fitting = [i for i, ln in enumerate(lines) if ln.startswith("baselines: fitting ItemKNN")]
    assert fitting, lines
    said = max(i for i, ln in enumerate(lines[:fitting[0]])
               if ln.startswith("fitting ItemKNN on all of train ("))
    assert all(seconds(lines[i]) >= seconds(lines[said]) > 0 for i in fitting), lines


def test_evaluate_run_tunes_the_baselines_on_the_runs_split_kind(monkeypatch, ml100k):
    """A temporal run's baselines are tuned on a temporal validation split, ordered as the
    run keeps each user's items (each pair's recency); a run without that order (a
    stream's) falls back to random and says so."""
    import twotower.evaluation.run as run_mod
    from twotower import TwoTower
    from twotower.data import temporal_split
    from twotower.models import ModelConfig
    x = ml100k.take(ml100k.users < 60)
    split = temporal_split(x, 0.2)
    calls = []

    def spy(cls, train, grid, seed=0, **kw):
        calls.append((cls.__name__, kw.get("split"), train))
        return real(cls, train, grid, seed, **kw)

    import twotower.evaluation.baselines as base_mod
    real = run_mod.tune
    monkeypatch.setattr(run_mod, "tune", spy)
    monkeypatch.setattr(base_mod, "tune", spy)  # EASE's (``tune_ease``)
    fitted = []  # the data each final EASE fit reads: the run's order, not none
    real_fit = base_mod.EASE.fit
    monkeypatch.setattr(base_mod.EASE, "fit",
                        lambda self, t: fitted.append((self.config, t)) or real_fit(self, t))
    tuned = []  # fits made by the time tune_ease returned: the final fits come after
    real_tune_ease = run_mod.tune_ease
    monkeypatch.setattr(run_mod, "tune_ease",
                        lambda *a, **kw: (r := real_tune_ease(*a, **kw),
                                          tuned.append(len(fitted)))[0])
    cfg = ModelConfig(query_tower="history", objective="multinomial", epochs=1,
                      embedding_dim=8, batch_size=32)
    model = TwoTower(cfg).fit(split.train)
    model.data_source = {"split": "temporal"}
    model._seen_recency = None  # a run saved before runs kept it: the history table's order
    test = (split.test.users, split.test.items)
    lines = []
    table, _ = run_mod.evaluate_run(model, test, ks=(10,), baselines=True, log=lines.append)
    # ItemKNN, then EASE and EASE+recency from one tune: every lambda with every query
    assert [(c[0], c[1]) for c in calls] == [("ItemKNN", "temporal"), ("EASE", "temporal")]
    assert any("temporal validation split" in ln for ln in lines)
    assert set(table) == {"model", "MostPop", "ItemKNN", "EASE", "EASE+recency"}
    finals = fitted[tuned[0]:]
    assert 1 <= len(finals) <= 2  # plain EASE; EASE+recency too where its lambda differs
    assert all(t.timestamps is not None for _, t in finals)  # ordered as the run orders
    assert not finals[0][0].weighted  # the plain EASE row's fit first
    # the order given to the tuning split is the training log's own: each user's latest
    # 20% by the made-up times are their latest 20% by real time
    ours = temporal_split(calls[0][2], 0.2).test
    theirs = temporal_split(split.train, 0.2).test
    assert (set(zip(ours.users.tolist(), ours.items.tolist()))
            == set(zip(theirs.users.tolist(), theirs.items.tolist())))
    # an id tower (no history table): the run keeps each pair's recency, so it tunes on
    # each user's true latest items (it was tuned on a random split, with no EASE+recency
    # row; and a history tower's items past its history_length were ordered by index)
    calls.clear()
    run = TwoTower(ModelConfig.preset("tutorial", epochs=1)).fit(split.train)
    run.data_source = {"split": "temporal"}
    table, _ = run_mod.evaluate_run(run, test, ks=(10,), baselines=True)
    assert [c[1] for c in calls] == ["temporal", "temporal"]
    assert "EASE+recency" in table
    ours = temporal_split(calls[0][2], 0.2).test
    assert (set(zip(ours.users.tolist(), ours.items.tolist()))
            == set(zip(theirs.users.tolist(), theirs.items.tolist())))
    calls.clear()
    lines.clear()
    run._seen_recency = None  # an id tower keeping no order (a stream's, an older run)
    table, _ = run_mod.evaluate_run(run, test, ks=(10,), baselines=True, log=lines.append)
    assert [c[1] for c in calls] == ["random", "random"]  # no order: no EASE+recency
    assert any("keeps no order" in ln for ln in lines) and "EASE+recency" not in table


def test_test_users_without_training_items_are_left_out_for_every_method():
    # a user whose every row fell in test: MostPop-like models answered them with the
    # popular items and EASE/ItemKNN with an arbitrary list (ties by index), and that
    # difference alone decided the table on a log with many one-interaction users
    from twotower.evaluation import MostPop, recommend_and_evaluate
    from twotower.evaluation.metrics import warm_part
    users = np.array([0, 0, 1, 1, 1, 2])
    items = np.array([0, 1, 1, 2, 3, 0])
    from twotower.data import Vocabulary
    uv, iv = Vocabulary(np.arange(4), name="user"), Vocabulary(np.arange(5), name="item")
    train = Interactions(users=users, items=items, user_vocab=uv, item_vocab=iv)
    test = Interactions(users=np.array([0, 1, 3, 3]), items=np.array([2, 4, 1, 4]),
                        user_vocab=uv, item_vocab=iv)  # user 3: nothing in train

    class Cold:  # a hit for user 3 only, whatever it is asked
        def recommend(self, u, k, exclude=None):
            return (np.zeros((len(u), k)),
                    np.array([[1, 4, 0][:k] if x == 3 else [0, 1, 2][:k] for x in u]))
    assert np.unique(warm_part(train, test).users).tolist() == [0, 1]
    r = recommend_and_evaluate(Cold(), train, test, ks=[2])
    assert r["users"] == 2.0 and r["recall@2"] == 0.0  # user 3's hits do not count
    assert recommend_and_evaluate(MostPop().fit(train), train, test, ks=[2])["users"] == 2.0
    only_cold = Interactions(users=np.array([3]), items=np.array([1]), user_vocab=uv,
                             item_vocab=iv)
    with pytest.raises(DataError, match="no test user has train items to recommend from"):
        recommend_and_evaluate(Cold(), train, only_cold, ks=[2])


def test_tuning_on_a_log_of_one_row_users_does_not_fail():
    # each user's one training row fell in the validation part: every validation user is
    # new to its training part and left out; tuning keeps the first setting, it did not
    # fail (evaluate --baselines, and the default model's EASE part with ease_split random)
    from twotower.data.splits import temporal_split
    from twotower.evaluation.baselines import EASE, tune
    from twotower.evaluation.metrics import warm_part
    rng = np.random.default_rng(0)
    x = Interactions.from_ids(np.repeat(np.arange(100), 2), rng.integers(0, 20, 200),
                              timestamps=np.tile([0, 1], 100))
    train = temporal_split(x, 0.2).train  # one row a user
    assert len(warm_part(train, train)) == len(train)
    res = tune(EASE, train, {"lambda_": [10.0, 100.0]}, 0)
    assert res.best_config.lambda_ == 10.0 and res.results == []


def test_held_out_text_ids_match_an_int_run_as_a_metadata_file_s_do(tmp_path):
    """A held-out CSV written from floats (`26.0,215.0`) matched none of an int run's ids,
    where an --items file's `5.0` matched item 5; `026` is still no int id."""
    from types import SimpleNamespace

    from twotower.data import Vocabulary, read_interactions
    from twotower.evaluation import held_out_pairs
    seen = sp.csr_matrix(([1.0], ([0], [0])), shape=(3, 3))
    model = SimpleNamespace(user_vocab=Vocabulary([26, 7, 8]),
                            item_vocab=Vocabulary([215, 3, 4]), _seen=seen)
    p = tmp_path / "held.csv"
    p.write_text("user_id,item_id\n26.0,215.0\n26.0,3.0\n7,4\n026,3\n8.5,3\n")
    x = read_interactions(p)
    assert not x.user_vocab.is_int  # text ids in the file
    users, items, left = held_out_pairs(model, x)
    # (26, 215) was trained on; (26, 3) and (7, 4) are judged; 026 and 8.5 are unknown
    assert sorted(zip(users.tolist(), items.tolist())) == [(0, 1), (1, 2)]
    assert left == {"unknown": 2, "trained": 1}


def test_a_stored_zero_in_sparse_truth_is_not_relevant():
    """A CSR truth may hold explicit zeros (a rating matrix minus a mask): they are not
    relevant items."""
    from twotower.evaluation.metrics import as_truth_csr
    m = sp.csr_matrix((np.array([0.0, 1.0, 2.0]), np.array([0, 1, 1]), np.array([0, 2, 3])),
                      shape=(2, 3))
    t = as_truth_csr(m)
    assert t.indices.tolist() == [1, 1] and t.data.tolist() == [1.0, 1.0]
    hits = hit_matrix(np.array([[0, 1], [1, 2]]), m)
    assert hits.tolist() == [[False, True], [True, False]]


@pytest.mark.filterwarnings("ignore:.*have no training interactions")
def test_evaluate_run_carves_the_baselines_validation_split_with_the_seed_given(
        monkeypatch, ml100k):
    """``seed=`` picks the validation split the baselines are tuned on; None takes the
    run's own seed (here the model config's)."""
    import twotower.evaluation.run as run_mod
    from twotower import TwoTower
    from twotower.data import random_split
    from twotower.models import ModelConfig

    class Seen(Exception):
        pass

    seeds = []

    def spy(cls, train, grid, seed=0, **kw):
        seeds.append(seed)
        raise Seen

    monkeypatch.setattr(run_mod, "tune", spy)
    split = random_split(ml100k.take(ml100k.users < 40), 0.2, seed=0)
    model = TwoTower(ModelConfig(query_tower="id", objective="mse", epochs=1, embedding_dim=4,
                                 batch_size=256, seed=5)).fit(split.train, verbose=0)
    test = (split.test.users, split.test.items)
    for given in (123, None):
        with pytest.raises(Seen):
            run_mod.evaluate_run(model, test, ks=(10,), baselines=True, seed=given)
    assert seeds == [123, 5]


@pytest.mark.parametrize("ks", [(1.7,), (True,), (10, 2.0), np.array([1.5])])
def test_cut_offs_that_are_not_integers_are_refused(ks):
    """int() made 1.7 and True K = 1 (scored and keyed recall@1) with no word."""
    with pytest.raises(ConfigError, match="`ks` must be positive integers"):
        evaluate_topk(np.array([[0, 1]]), [np.array([1])], ks=ks, n_items=3)
    assert evaluate_topk(np.array([[0, 1]]), [np.array([1])], ks=np.array([1, 2]),
                         n_items=3)["recall@2"] == 1.0


def test_cut_offs_given_by_a_generator_are_read():
    """The check of each K's type read a generator to its end before the cut-offs were
    taken from it: none left, refused as empty (per_user_metrics and
    recommend_and_evaluate read them before that check)."""
    got = per_user_metrics(np.array([[0, 1]]), [np.array([1])], ks=(k for k in (1, 2)),
                           n_items=3)
    assert got["recall@1"].tolist() == [0.0] and got["recall@2"].tolist() == [1.0]


def test_a_dense_integer_relevance_matrix_is_refused_not_read_as_items_0_and_1():
    """An int 0/1 [users, n_items] matrix was read as the item indices 0 and 1: recall@2
    1.0 for a list that misses the only relevant item (2)."""
    dense = np.array([[0, 0, 1]])
    with pytest.raises(DataError, match=r"a \[1, 3\] array of 0s and 1s: a dense relevance "
                                        r"matrix"):
        evaluate_topk(np.array([[0, 1]]), dense, ks=(2,), n_items=3)
    assert evaluate_topk(np.array([[0, 1]]), sp.csr_matrix(dense), ks=(2,))["recall@2"] == 0
    # rows of indices that merely are 0s and 1s, narrower than the catalogue, still read
    assert evaluate_topk(np.array([[0, 1]]), np.array([[0, 1]]), ks=(2,),
                         n_items=3)["recall@2"] == 1.0


def test_integer_truth_rows_held_as_objects_are_read():
    """The float/bool check refused rows of Python ints in an object array, read before."""
    rows = [np.array([1, 2], dtype=object), np.array([], dtype=object)]
    assert evaluate_topk(np.array([[1, 0], [0, 1]]), rows, ks=(2,),
                         n_items=3)["recall@2"] == 0.5
    with pytest.raises(DataError, match="truth row 0 must hold integer item indices"):
        evaluate_topk(np.array([[1, 0]]), [np.array([1.5], dtype=object)], ks=(2,), n_items=3)
