from __future__ import annotations

import numpy as np

import twotower.artifacts
from twotower.index import build_run_index, load_index


class _FakeRun:
    """The few things build_run_index reads from a loaded model."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.item_embeddings = rng.standard_normal((3000, 16)).astype(np.float32)
        self.user_vocab = list(range(50))
        self._users = rng.standard_normal((50, 16)).astype(np.float32)

    def query_embeddings(self, users):
        return self._users[users]

    def seen_items(self, users):
        return [np.arange(u, u + 5) for u in users]


def test_build_run_index(monkeypatch, tmp_path):
    monkeypatch.setattr(twotower.artifacts, "load_model", lambda run: _FakeRun())
    report = build_run_index(tmp_path, kind="ivf", nprobe=40, sample=20)
    assert report["items"] == 3000 and report["sample_users"] == 20
    assert report["recall@10"] >= 0.9
    assert load_index(report["saved"]).config.nprobe == 40
