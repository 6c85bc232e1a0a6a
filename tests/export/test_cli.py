"""`dstlab export RUN_DIR` on real run directories, and its one-sentence errors."""

from __future__ import annotations

import pytest
import torch

from dstlab.cli import main
from dstlab.export import load, read
from dstlab.models import create_model
from dstlab.run import RunConfig, train
from dstlab.run.files import load_checkpoint

from .conftest import ATOL, RTOL, outputs


def _run(folder, **options) -> object:
    """A digits MLP trained one epoch (21 steps, two topology updates)."""
    values = {"epochs": 1, "density": 0.1, "update_every": 10, "threads": 1}
    train(RunConfig(**{**values, **options}), folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("run") / "run")


def _trained_outputs(run, x):
    """The outputs of the run's final model, rebuilt by hand from its checkpoint."""
    model = create_model("mlp", input_shape=(64,), num_classes=10)
    state = load_checkpoint(run / "checkpoint.pt")["model"]
    model.load_state_dict(state)
    return outputs(model.eval(), x)


def _fails(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dstlab: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("format,flags", [("dense", []), ("csr", []), ("condensed", ["--pad"])])
def test_export_writes_a_file_that_loads_into_the_trained_model(
    run_dir, tmp_path, capsys, format, flags
):
    out = tmp_path / f"{format}.pt"
    assert main(["export", str(run_dir), "--format", format, "--out", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} ({format}," in printed and "fc1.weight: density" in printed
    x = torch.randn(16, 64)
    model = load(out)  # rebuilt from the registry: the file names its architecture
    expected = _trained_outputs(run_dir, x)
    if format == "dense":
        assert torch.equal(outputs(model, x), expected)
    else:
        assert set(read(out)["layers"]) == {"fc1", "fc2", "fc3"}
        torch.testing.assert_close(outputs(model, x), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.slow
def test_a_sparse_backend_run_exports_its_csr_layers(tmp_path):
    """Its checkpoint holds CSR tensors and positions, not weights and masks: the csr export
    (from the positions) and the dense one (from the CSR tensors) agree."""
    run = _run(tmp_path / "run", backend="sparse")
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert "fc1.crow" in ckpt["model"] and "fc1.weight" in ckpt["dst"]["positions"]
    for format in ("csr", "dense"):
        assert main(["export", str(run), "--format", format, "--out", str(tmp_path / format)]) == 0
    x = torch.randn(4, 64)
    csr, dense = load(tmp_path / "csr"), load(tmp_path / "dense")
    assert type(csr.fc1).__name__ == "CSRLinear" and type(dense.fc1).__name__ == "Linear"
    assert int((dense.fc1.weight != 0).sum()) <= ckpt["dst"]["positions"]["fc1.weight"].numel()
    torch.testing.assert_close(outputs(csr, x), outputs(dense, x), atol=ATOL, rtol=RTOL)


def test_export_errors_are_one_sentence(run_dir, tmp_path, capsys):
    out = str(tmp_path / "m.pt")
    err = _fails(["export", str(tmp_path / "nowhere"), "--out", out], capsys)
    assert "does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no checkpoint.pt" in _fails(["export", str(empty), "--out", out], capsys)
    err = _fails(["export", str(run_dir), "--format", "coo", "--out", out], capsys)
    assert "unknown export format 'coo'" in err
    err = _fails(["export", str(run_dir), "--format", "condensed", "--out", out], capsys)
    assert "has fan-ins from" in err and "structure='fan_in'" in err and "--pad" in err
    if not torch.cuda.is_available():
        err = _fails(["export", str(run_dir), "--format", "semi_structured", "--out", out], capsys)
        assert "compute capability 8.0" in err
    err = _fails(["export", str(run_dir), "--out", str(tmp_path / "no" / "m.pt")], capsys)
    assert "does not exist" in err
    assert not (tmp_path / "m.pt").exists()


def test_a_dense_run_exports_only_as_dense(tmp_path, capsys):
    run = _run(tmp_path / "run", mode="dense")
    err = _fails(["export", str(run), "--format", "csr", "--out", str(tmp_path / "m.pt")], capsys)
    assert "trained a dense model" in err
    assert main(["export", str(run), "--out", str(tmp_path / "m.pt")]) == 0
