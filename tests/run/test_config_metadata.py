"""RunConfig's field metadata is the one source of truth for what each run option is: every list
of options elsewhere (the engine's keywords, a study's normalisation, the report's baselines,
the CLI's help) is derived from it, so adding an option is one field."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from dstlab import DST
from dstlab.analysis import results
from dstlab.cli import build_parser
from dstlab.run import config as cfg
from dstlab.run import preflight
from dstlab.run.config import RunConfig
from dstlab.study.spec import normalise

FIELDS = dataclasses.fields(RunConfig)


def _names(keep) -> tuple[str, ...]:
    return tuple(f.name for f in FIELDS if keep(f.metadata))


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_each_option_has_a_group_and_one_line_of_help(field):
    assert field.metadata["group"] in cfg.GROUPS
    text = field.metadata["help"]
    assert text.strip() and "\n" not in text and not text.endswith(".")


def test_the_derived_lists_are_what_the_metadata_says():
    assert _names(lambda m: m.get("dst")) == cfg.DST_OPTIONS
    assert _names(lambda m: m.get("observer")) == cfg.OBSERVERS
    assert _names(lambda m: m["group"] in ("topology", "update")) == cfg.SPARSE_OPTIONS
    assert _names(lambda m: m["group"] == "update") == cfg.UPDATE_OPTIONS
    assert _names(lambda m: m["group"] not in ("environment", "scale")) == cfg.IDENTITY_OPTIONS
    assert set(RunConfig().identity()) == set(cfg.IDENTITY_OPTIONS)
    # the report neutralises a baseline's sparse-only options, except the observers and density
    assert set(cfg.OBSERVERS) == results._OBSERVERS
    assert set(cfg.SPARSE_OPTIONS) - set(cfg.OBSERVERS) - {"density"} == results._TOPOLOGY
    assert results._TOPOLOGY - set(cfg.UPDATE_OPTIONS) == results._STATIC_KEEPS
    assert set(cfg.DST_OPTIONS) - {"backend"} <= set(preflight._ENGINE_KEYS)


def test_the_options_flagged_dst_are_exactly_the_engines_keywords_a_run_has():
    keywords = set(inspect.signature(DST.__init__).parameters)
    # model and optimizer are objects the run builds; the seed reaches DST too, but it seeds
    # everything else as well, so it is passed on its own
    built = {"model", "optimizer", "seed"}
    assert set(cfg.DST_OPTIONS) == (keywords & {f.name for f in FIELDS}) - built


def test_options_in_refuses_an_unknown_group():
    with pytest.raises(ValueError, match="unknown option group"):
        cfg.options_in("topolgy")


def test_normalisation_resets_exactly_the_sparse_and_the_update_groups():
    changed = RunConfig(
        density=0.3, prune="snip", grow="gradient", distribution="er", erk_power=0.5,
        dense_layers=("fc1.weight",), update_every=7, update_start=0.1, update_end=0.9,
        drop_fraction=0.3, drop_fraction_min=0.01, decay="linear", selection="global",
        global_normalize="layer_sum", gamma=2.0, score_smoothing=0.5, update_position="after",
        shadow_criteria=("magnitude",), start_similarity=(0.5,), backend="sparse", epochs=3,
        structure="fan_in",
    )  # fmt: skip
    # row ablation weighs rows within a layer, so it needs local selection: a second config
    ablating = changed.replace(selection="local", global_normalize=None, ablate_below=2)
    default = RunConfig()
    differs = {
        f.name
        for config in (changed, ablating)
        for f in FIELDS
        if getattr(config, f.name) != getattr(default, f.name)
    }
    assert differs == {*cfg.SPARSE_OPTIONS, "epochs"}, (
        "the configs above must change every sparse option (add the new one)"
    )
    for config in (changed, ablating):
        for mode, reset in (("dense", cfg.SPARSE_OPTIONS), ("static", cfg.UPDATE_OPTIONS)):
            # a dense run cannot even ask for start_similarity (it has no masks)
            extra = {"start_similarity": ()} if mode == "dense" else {}
            out = normalise(config.replace(mode=mode, **extra))
            kept = {f.name for f in FIELDS if getattr(out, f.name) == getattr(config, f.name)}
            assert out.epochs == 3
            for name in reset:
                expected = 1.0 if (mode, name) == ("dense", "density") else getattr(default, name)
                assert getattr(out, name) == expected, (mode, name)
            assert set(cfg.SPARSE_OPTIONS) - set(reset) <= kept


def test_the_cli_help_of_each_option_is_its_metadata_plus_its_choices():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    formatter = train._get_formatter()
    actions = {a.dest.removeprefix("option_"): a for a in train._actions}
    for f in FIELDS:
        text = formatter._get_help_string(actions[f.name])
        assert text.startswith(f.metadata["help"].replace("%", "%%"))
        assert "(default: " in text
        allowed = cfg.choices(f.name)
        if allowed is not None:
            assert "one of " + ", ".join("none" if v is None else str(v) for v in allowed) in text


def test_option_types_read_the_annotations():
    assert cfg.option_type("density") == cfg.OptionType(float, is_list=False, optional=False)
    assert cfg.option_type("augment") == cfg.OptionType(bool, is_list=False, optional=False)
    assert cfg.option_type("threads") == cfg.OptionType(int, is_list=False, optional=True)
    assert cfg.option_type("global_normalize") == cfg.OptionType(str, False, optional=True)
    assert cfg.option_type("lr_milestones") == cfg.OptionType(int, is_list=True, optional=False)
    assert cfg.option_type("start_similarity") == cfg.OptionType(float, True, optional=False)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_every_default_has_its_options_type(field):
    kind = cfg.option_type(field.name)
    items = field.default if kind.is_list else (field.default,)
    assert isinstance(items, tuple) or not kind.is_list
    assert all((item is None and kind.optional) or type(item) is kind.kind for item in items), (
        field.default
    )
