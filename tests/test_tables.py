"""pages/_tables: run tables for people (titles with units, mean Dice over labels in both, "–" cells)."""

from __future__ import annotations

import pytest
from test_metrics_presence import pair_missing_a_label
from test_run_record import oracle_record

from pages import _tables as tables
from regcore import viz


def test_comparison_table_defaults_to_labels_in_both_and_lists_skipped_ones():
    rec = oracle_record(pair_missing_a_label())
    runs = {"oracle run": rec}
    df = tables.comparison_table(runs)
    assert tables.DICE_IN_BOTH in df.columns and tables.DICE_ALL not in df.columns
    assert not any("_" in c for c in df.columns), "no snake_case column names"
    assert "Runtime (s)" in df.columns and "Mean TRE (mm)" in df.columns
    after = df[df["Run"] == "oracle run"].iloc[0]
    before = df[df["Run"].str.startswith("before")].iloc[0]
    assert after[tables.DICE_IN_BOTH] == pytest.approx(rec.metrics["dice"]["disk"])
    assert before[tables.DICE_IN_BOTH] == pytest.approx(rec.before_metrics["dice"]["disk"])
    assert tables.skipped_labels(runs) == {"shifted": ("square",)}
    everything = tables.comparison_table(runs, include_all=True)
    assert everything[everything["Run"] == "oracle run"].iloc[0][tables.DICE_ALL] == pytest.approx(
        rec.metrics["dice_mean"]
    ), "include all = the stored engine mean"
    assert rec.metrics["dice_mean"] == pytest.approx(0.5)


def test_per_structure_blanks_labels_in_one_image_unless_all_are_included():
    runs = {"r": oracle_record(pair_missing_a_label())}
    assert list(tables.per_structure(runs, "dice", include_all=False).index) == ["disk"]
    assert set(tables.per_structure(runs, "dice", include_all=True).index) == {"disk", "square"}
    assert len(tables.per_structure(runs, "tre", include_all=False)) == 3, "landmarks are never skipped"


def test_shown_cells_have_three_significant_digits_and_no_none():
    df = tables.comparison_table({"r": oracle_record()})
    html = viz.format_columns(df).to_html()
    assert "None" not in html and "nan" not in html
    runtime = df[df["Run"] == "r"].iloc[0]["Runtime (s)"]
    assert viz.format_number(runtime) == "0.500" and "0.500" in html


def test_the_pair_column_appears_only_when_runs_come_from_several_pairs():
    from dataclasses import replace

    rec = oracle_record(pair_missing_a_label())
    one = tables.comparison_table({"a": rec, "b": rec})
    assert "Pair" not in one.columns and list(one["Run"]) == ["before registration", "a", "b"]
    other = replace(rec, pair=replace(rec.pair, name="another pair"))
    two = tables.comparison_table({"a": rec, "c": other})
    assert list(two["Pair"]) == [rec.pair_name, rec.pair_name, "another pair", "another pair"]


def test_settings_table_puts_the_parameters_that_differ_first():
    """Two demons runs (one after an affine stage) and a run without a config: parameters x runs, as text."""
    from test_run_record import shifted_pair

    from regcore.methods.registry import get
    from regcore.metrics import evaluate
    from regcore.pipeline import register_after_initial
    from regcore.run_record import RunRecord

    pair = shifted_pair()
    spec = get("demons")

    def demons_run(overrides: dict, initial: str) -> RunRecord:
        config = spec.make_config(overrides)
        result = register_after_initial(
            initial, pair.fixed, pair.moving, lambda f, m, _: spec.factory().register(f, m, config)
        )
        return RunRecord(pair, result, evaluate(result, **pair.annotations))

    runs = {
        "a": demons_run({"levels": 2}, "none"),
        "b": demons_run({"levels": 2, "iterations": "10, 5", "sigma_elastic": 1.5}, "affine"),
        "oracle": oracle_record(),  # no settings: no column
    }
    df = tables.settings_table(runs)
    assert list(df.columns) == ["a", "b"]
    assert set(df.index[:3]) == {"Method", "Iterations", "Sigma elastic"}, "the rows that differ come first"
    assert df.loc["Method"].tolist() == ["demons", "affine -> demons"]
    assert df.loc["Iterations"].tolist() == ["50, 50", "10, 5"]  # auto shown as the counts that ran
    assert df.loc["Force"].tolist() == ["symmetric", "symmetric"]
    assert tables.settings_table({"oracle": oracle_record()}).empty
