"""Fixtures of the service tests: apps over the session's trained runs."""

from __future__ import annotations

import shutil

import pytest

TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def run_dir(tutorial_run):
    return tutorial_run[1]


@pytest.fixture(scope="session")
def history_run(tmp_path_factory, ml_split):
    """A run with a history query tower (1 epoch: only its shape matters here; no EASE
    part, whose tuning took most of this fixture's time, and batches of 500)."""
    from twotower import ModelConfig, TwoTower
    cfg = ModelConfig.preset("default", query_tower="history", epochs=1, embedding_dim=16,
                             history_length=50, ease_weight=0.0, batch_size=500)
    model = TwoTower(cfg).fit(ml_split.train, verbose=0)
    run = tmp_path_factory.mktemp("runs") / "history"
    model.save(run, data={"source": "movielens-100k"})
    return model, run


@pytest.fixture(scope="session")
def slash_run(tmp_path_factory):
    """A tiny run whose user and item ids are strings holding "/" (1 epoch)."""
    import numpy as np

    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    data = Interactions.from_ids([f"u/{u}" for u in rng.integers(0, 20, 400)],
                                 [f"movies/{i}" for i in rng.integers(0, 30, 400)],
                                 ratings=rng.integers(1, 6, 400))
    model = TwoTower(ModelConfig.preset("tutorial", epochs=1, embedding_dim=8)).fit(
        data, verbose=0)
    run = tmp_path_factory.mktemp("runs") / "slash"
    model.save(run)
    return model, run


@pytest.fixture(scope="session")
def broken_run(tmp_path_factory, run_dir):
    """A copy of the tutorial run with a corrupted array file."""
    bad = tmp_path_factory.mktemp("runs") / "broken"
    shutil.copytree(run_dir, bad)
    with open(bad / "arrays.npz", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00garbage\x00")
    return bad


@pytest.fixture(scope="module")
def app(run_dir):
    from twotower.service import create_app
    return create_app(run_dir, admin_token=TOKEN)


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient
    with TestClient(app) as c:
        yield c

