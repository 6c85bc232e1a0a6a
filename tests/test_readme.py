"""The README's examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_training_loop_example_runs_and_keeps_density(capsys, restore_criteria):
    blocks = _python_blocks()
    assert blocks, "the README lost its python examples"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert "density 0.100" in capsys.readouterr().out
    exec(compile(blocks[1].replace("abs_grad", "readme_abs_grad"), "README.md", "exec"), namespace)
    import dstlab

    assert "readme_abs_grad" in dstlab.list_pruners()


def test_readme_mixed_precision_loop_runs(capsys):
    blocks = _python_blocks()
    # what the first example defines: the imports and a batch (x, y)
    prelude = "\n".join(
        line for line in blocks[0].splitlines() if line.startswith(("import", "from", "x, y"))
    )
    namespace: dict = {}
    exec(compile(prelude, "README.md", "exec"), namespace)
    amp = next(b for b in blocks if "GradScaler" in b)
    exec(compile(amp, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "density 0.100 after" in out and "after 0 updates" not in out
