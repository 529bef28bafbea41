"""Messages when a registration made Dice or TRE worse than the unregistered pair."""

from __future__ import annotations

from regcore.metrics.worsening import worse_than_before


def test_worse_dice_and_tre_are_both_named_with_their_values():
    messages = worse_than_before(
        {"dice_mean": 0.70, "tre_mean_mm": 52.05}, {"dice_mean": 0.60, "tre_mean_mm": 52.34 * 1.1}
    )
    assert len(messages) == 2
    assert "0.700" in messages[0] and "0.600" in messages[0] and "Dice" in messages[0]
    assert "52.05 mm" in messages[1] and "TRE" in messages[1]


def test_improvements_noise_and_missing_values_give_no_message():
    assert (
        worse_than_before({"dice_mean": 0.6, "tre_mean_mm": 10.0}, {"dice_mean": 0.8, "tre_mean_mm": 4.0})
        == []
    )
    assert (
        worse_than_before({"dice_mean": 0.6, "tre_mean_mm": 10.0}, {"dice_mean": 0.598, "tre_mean_mm": 10.1})
        == []
    )
    assert worse_than_before({}, {"dice_mean": 0.1}) == []
    assert (
        worse_than_before(
            {"dice_mean": None, "tre_mean_mm": float("nan")}, {"dice_mean": 0.1, "tre_mean_mm": 3}
        )
        == []
    )
