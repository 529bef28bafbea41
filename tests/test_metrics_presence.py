"""regcore.metrics.presence: mean Dice over the labels both images hold, for display (stored metrics unchanged)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_run_record import oracle_record, shifted_pair

from regcore.metrics.overlap import label_overlap
from regcore.metrics.presence import LabelPresence, labels_in_both, mean_over_present


def pair_missing_a_label():
    """The shifted pair with the 'square' (label 2) erased from the moving label map."""
    pair = shifted_pair()
    lab = pair.moving_labels.data.clone()
    lab[lab == 2] = 0
    return replace(pair, moving_labels=pair.moving_labels.with_data(lab))


def test_labels_in_both_matches_the_engine_absent_labels():
    pair = pair_missing_a_label()
    presence = labels_in_both(pair.fixed_labels, pair.moving_labels, pair.label_names)
    assert presence == LabelPresence(both=("disk",), only_fixed=("square",), only_moving=())
    engine = label_overlap(pair.fixed_labels, pair.moving_labels, label_names=pair.label_names)
    assert set(engine["absent"]) == set(presence.skipped), "same notion as regcore.metrics.overlap"
    swapped = labels_in_both(pair.moving_labels, pair.fixed_labels, pair.label_names)
    assert swapped.only_moving == ("square",) and swapped.only_fixed == ()
    unnamed = labels_in_both(np.array([[0, 1], [3, 3]]), np.array([[1, 0], [0, 2]]))
    assert unnamed == LabelPresence(both=("1",), only_fixed=("3",), only_moving=("2",))
    fixed, moving = np.array([[0, 70000], [5, 5]], np.int64), np.array([[70000, 0], [0, 0]], np.int32)
    big = labels_in_both(fixed, moving)  # values >= 2**16: the np.unique path
    assert big == LabelPresence(both=("70000",), only_fixed=("5",), only_moving=())
    with pytest.raises(ValueError, match="fixed_labels must hold non-negative"):
        labels_in_both(np.array([[-1, 0]]), np.zeros((1, 2), int))


def test_mean_over_present_skips_one_image_labels_and_keeps_stored_metrics():
    rec = oracle_record(pair_missing_a_label())
    stored = dict(rec.metrics)
    presence = labels_in_both(rec.fixed_labels, rec.moving_labels, rec.label_names)
    assert rec.metrics["dice"] == {"disk": pytest.approx(1.0), "square": 0.0}
    assert rec.metrics["dice_mean"] == pytest.approx(0.5), "the engine counts the missing label as 0"
    summary = mean_over_present(rec.metrics["dice"], presence)
    assert summary.mean == pytest.approx(1.0) and summary.used == ("disk",) and summary.skipped == ("square",)
    everything = mean_over_present(rec.metrics["dice"], None)
    assert everything.mean == pytest.approx(rec.metrics["dice_mean"]) and everything.skipped == ()
    assert rec.metrics == stored, "display means never change the stored metrics"
    full = oracle_record()
    full_presence = labels_in_both(full.fixed_labels, full.moving_labels, full.label_names)
    assert mean_over_present(full.metrics["dice"], full_presence).mean == pytest.approx(
        full.metrics["dice_mean"]
    )


def test_mean_over_present_edge_cases():
    p = LabelPresence(both=("a",), only_fixed=(), only_moving=())
    assert mean_over_present({"a": None, "b": 0.5}, p).mean is None
    assert mean_over_present({"a": float("nan")}, None).mean is None
    with pytest.raises(TypeError, match="per_structure must be a dict"):
        mean_over_present([0.5], p)
