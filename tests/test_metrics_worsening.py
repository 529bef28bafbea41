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


def test_hd95_and_structures_that_fell_are_named_even_when_the_mean_dice_improved():
    """The 2D sample pair with demons: mean Dice 0.750 -> 0.782, but the right parietal cortex 0.764 -> 0.441."""
    before = {
        "dice_mean": 0.750,
        "hd95_mean_mm": 3.40,
        "dice": {"Right-Parietal-Cortex": 0.764, "Right-Occipital-Cortex": 0.865, "Left-Thalamus": 0.808},
    }
    after = {
        "dice_mean": 0.782,
        "hd95_mean_mm": 4.53,
        "dice": {"Right-Parietal-Cortex": 0.441, "Right-Occipital-Cortex": 0.737, "Left-Thalamus": 0.921},
    }
    hd95, structures = worse_than_before(before, after)
    assert hd95 == "Mean HD95 got worse: 3.40 mm before registration, 4.53 mm after."
    assert structures == (
        "Dice fell by more than 0.05 in 2 structures: Right-Parietal-Cortex 0.764 -> 0.441, "
        "Right-Occipital-Cortex 0.865 -> 0.737."
    )


def test_structure_drops_skip_noise_and_missing_values_and_count_beyond_three():
    before = {"dice": {f"s{k}": 0.9 for k in range(5)} | {"absent": float("nan"), "small": 0.8}}
    after = {"dice": {f"s{k}": 0.9 - 0.1 * (k + 1) for k in range(5)} | {"absent": 0.0, "small": 0.76}}
    (message,) = worse_than_before(before, after)
    assert message.startswith("Dice fell by more than 0.05 in 5 structures: s4 0.900 -> 0.400, s3")
    assert message.endswith("and 2 more.") and "small" not in message and "absent" not in message
    assert worse_than_before({"hd95_mean_mm": 4.0}, {"hd95_mean_mm": 4.1}) == []  # within 5 %
