"""The README's integration examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    text = README.read_text().split("<!-- section: integrations -->", 1)[1].split("\n## Layout")[0]
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_readme_lightning_and_transformers_examples_run(capsys):
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    lightning_block, transformers_block = _blocks("python")
    exec(compile(lightning_block, "README.md", "exec"), {})
    assert "density 0.200" in capsys.readouterr().out
    namespace: dict = {}
    exec(compile(transformers_block, "README.md", "exec"), namespace)
    assert namespace["dst"].options["density"] == 0.3


def test_readme_tracker_command_parses(tmp_path):
    from dstlab.cli import build_parser
    from dstlab.run.cli_args import config_from_args

    [command] = [line for line in _blocks("bash")[0].splitlines() if line.startswith("dstlab")]
    args = build_parser().parse_args(command.split()[1:])
    config, out = config_from_args(args)
    assert config.log == ("tensorboard", "mlflow") and out == Path("runs/tracked")
