"""Exported models reload without dstlab's engine and give the trained model's outputs: dense
exactly, csr and condensed within float32 rounding (ATOL = RTOL = 1e-5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import dstlab.export.modules
from dstlab.export import export, load, save

from .conftest import ATOL, RTOL, outputs, trained

FORMATS = {"dense": {}, "csr": {}, "condensed": {"pad": True}}

# a program that knows torch, a copy of modules.py and its own MLP class, and nothing of dstlab
_PLAIN_TORCH = textwrap.dedent(
    """
    import importlib.util, sys
    sys.modules["dstlab"] = None  # as if dstlab were not installed: importing it fails
    import torch
    from torch import nn

    spec = importlib.util.spec_from_file_location("export_modules", sys.argv[1])
    export_modules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_modules)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(64, 256), nn.Linear(256, 256), nn.Linear(256, 10)

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    x = torch.load(sys.argv[2], weights_only=True)
    results = {}
    for path in sys.argv[4:]:
        exported = torch.load(path, weights_only=True)
        model = MLP()
        if exported["format"] == "dense":
            model.load_state_dict(exported["state_dict"])
        else:
            export_modules.load_into(model, exported)
        with torch.no_grad():
            results[exported["format"]] = model.eval()(x)
    assert export_modules._fast() is None  # dstlab's kernels were not found: torch computed
    loaded = [name for name, module in sys.modules.items() if name.startswith("dstlab")]
    assert all(sys.modules[name] is None for name in loaded), loaded
    torch.save(results, sys.argv[3])
    """
)


@pytest.mark.slow
def test_exports_reload_with_plain_torch_in_a_process_without_dstlab(tmp_path):
    model, dst, x = trained("mlp", (64,))
    expected = outputs(model, x)
    paths = []
    for format, options in FORMATS.items():
        paths.append(tmp_path / f"{format}.pt")
        save(export(model, dst, format, **options), paths[-1])
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "plain.py"
    script.write_text(_PLAIN_TORCH)
    modules_file = Path(dstlab.export.modules.__file__)
    done = subprocess.run(
        [sys.executable, str(script), str(modules_file), str(tmp_path / "x.pt"),
         str(tmp_path / "out.pt"), *map(str, paths)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = torch.load(tmp_path / "out.pt", weights_only=True)
    assert set(results) == set(FORMATS)
    assert torch.equal(results["dense"], expected)
    for format in ("csr", "condensed"):
        torch.testing.assert_close(results[format], expected, atol=ATOL, rtol=RTOL)


def test_modules_file_imports_only_torch():
    """At the top level: dstlab's compiled kernels are looked for lazily, and optionally."""
    import ast

    names = set()
    for node in ast.parse(Path(dstlab.export.modules.__file__).read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    allowed = {"__future__", "collections", "torch", "warnings"}
    assert {name.split(".")[0] for name in names} <= allowed


@pytest.mark.parametrize("format", list(FORMATS))
def test_lenet_round_trips_through_a_file(tmp_path, format):
    model, dst, x = trained("lenet5", (1, 28, 28))
    path = tmp_path / "lenet.pt"
    save(export(model, dst, format, **FORMATS[format]), path)
    from dstlab.models import create_model

    loaded = load(path, model=create_model("lenet5", input_shape=(1, 28, 28), num_classes=10))
    if format != "dense":
        assert type(loaded.fc1).__name__ != "Linear" and type(loaded.conv2).__name__ != "Conv2d"
    for batch in (x, x[:1]):
        torch.testing.assert_close(
            outputs(loaded, batch), outputs(model, batch), atol=ATOL, rtol=RTOL
        )


@pytest.mark.parametrize("format", list(FORMATS))
def test_sparse_backend_layers_export_without_a_dense_detour(format):
    model, dst, x = trained("mlp", (64,), backend="sparse", backend_options={"force": True})
    assert type(model.fc1).__name__ == "SparseLinear"
    exported = export(model, dst, format, **FORMATS[format])
    fc1 = {k for k in exported["state_dict"] if k.startswith("fc1.")}
    assert not fc1 & {"fc1.crow", "fc1.col", "fc1.perm"}  # the training structure stays behind
    from dstlab.models import create_model

    plain = dstlab.export.load_into(
        create_model("mlp", input_shape=(64,), num_classes=10), exported
    )
    torch.testing.assert_close(outputs(plain.eval(), x), outputs(model, x), atol=ATOL, rtol=RTOL)
