"""`dstlab train --backend sparse` end to end: the same run as the masked backend."""

import pytest

from dstlab.run import RunConfig, train
from dstlab.sparse import backend as sparse_backend
from dstlab.sparse.backend import SparseRule


@pytest.mark.slow
def test_train_with_sparse_backend_matches_masked(tmp_path, monkeypatch):
    # a run's config has no rule option: make every eligible Linear sparse for this test
    monkeypatch.setattr(sparse_backend, "DEFAULT_RULE", SparseRule(force=True))
    results = {}
    for backend in ("masked", "sparse"):
        config = RunConfig(
            data="digits", model="mlp", density=0.1, backend=backend, epochs=2, update_every=20,
            dense_layers=("fc3.weight",), threads=1, seed=0,
        )  # fmt: skip
        results[backend] = train(config, tmp_path / backend, progress=False)
    masked, sparse = results["masked"], results["sparse"]
    assert sparse["status"] == "done" and sparse["final_density"] == masked["final_density"]
    assert sparse["final_train_loss"] == pytest.approx(masked["final_train_loss"], rel=1e-4)
    assert sparse["test_acc"] == pytest.approx(masked["test_acc"], abs=0.01)
