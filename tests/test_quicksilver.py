"""Quicksilver (teacher supervision): the teacher cache, training against it, and the shipped 2D weights."""

from __future__ import annotations

import pytest
import torch

from regcore.methods.learned.family import StepContext, get_family
from regcore.methods.learned.quicksilver import TeacherCache, build_teacher_cache, label_key, run_teacher
from regcore.train.config import config_from_dict
from regcore.train.objectives import dice_per_pair, similarity_module

SHAPE = (32, 32)


def _samples(n: int = 2) -> list[dict[str, torch.Tensor]]:
    """Labelled pairs of blobs, moving = fixed shifted by a few voxels (a different shift per pair); the true
    field is hidden (has_true False), as on real slices, so only the teacher can supply it."""
    yy, xx = torch.meshgrid(torch.arange(SHAPE[0]), torch.arange(SHAPE[1]), indexing="ij")

    def labels(dy: float, dx: float) -> torch.Tensor:
        lab = torch.zeros(SHAPE, dtype=torch.long)
        lab[((yy - 16 - dy) ** 2 + (xx - 16 - dx) ** 2) < 90] = 1
        lab[((yy - 13 - dy) ** 2 + (xx - 18 - dx) ** 2) < 16] = 2
        lab[(abs(yy - 21 - dy) < 3) & (abs(xx - 12 - dx) < 4)] = 3
        return lab[None]

    out = []
    for i in range(n):
        fixed_labels, moving_labels = labels(0, 0), labels(1.5 + i, -2.0 + 0.5 * i)
        image = lambda lab: torch.tensor([0.0, 0.4, 0.9, 0.7])[lab]  # noqa: E731
        out.append(
            {
                "moving": image(moving_labels),
                "fixed": image(fixed_labels),
                "moving_labels": moving_labels,
                "fixed_labels": fixed_labels,
                "true_displacement": torch.zeros(2, *SHAPE),
                "has_true": torch.tensor(False),
            }
        )
    return out


def _batch(samples):
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def test_teacher_cache_round_trips_and_recognises_flipped_pairs(tmp_path):
    samples = _samples(2)
    path = tmp_path / "cache.pt"
    built = build_teacher_cache(samples, "demons", path)
    loaded = TeacherCache.load(path)
    assert len(loaded) == 2 and loaded.meta["teacher"] == "demons" and loaded.meta["pairs"] == 2
    for s in samples:
        u = loaded.lookup(s["fixed_labels"], s["moving_labels"])
        assert u is not None and u.shape == (2, *SHAPE) and float(u.abs().max()) > 0.05
        assert torch.equal(u, built.lookup(s["fixed_labels"], s["moving_labels"]))
        # the same pair mirrored left-right: the field is mirrored and its column component changes sign
        flipped = loaded.lookup(s["fixed_labels"].flip(2), s["moving_labels"].flip(2))
        expected = u.flip(2).clone()
        expected[1] *= -1
        assert flipped is not None and torch.equal(flipped, expected)
    s0 = samples[0]
    assert loaded.lookup(s0["moving_labels"], s0["fixed_labels"]) is None  # an unseen pair (swapped roles)
    (tmp_path / "bad.pt").write_bytes(b"not a cache")
    with pytest.raises(ValueError, match="unreadable"):
        TeacherCache.load(tmp_path / "bad.pt")


def test_bad_inputs_name_the_field():
    s = _samples(1)[0]
    with pytest.raises(ValueError, match="fixed_labels"):
        label_key(torch.zeros_like(s["fixed_labels"]), s["moving_labels"])
    with pytest.raises(ValueError, match="teacher"):
        run_teacher(s["fixed"], s["moving"], "lddmm")
    with pytest.raises(ValueError, match=r"\(1, \*T\)"):
        run_teacher(s["fixed"], s["moving"][:, :16], "demons")
    with pytest.raises(ValueError, match="teacher"):
        get_family("quicksilver").make_config({"teacher": "lddmm"})


def test_short_training_lowers_the_field_error_to_the_teacher(tmp_path):
    samples = _samples(2)
    path = tmp_path / "cache.pt"
    cache = build_teacher_cache(samples, "demons", path)
    cfg = config_from_dict(
        {
            "family": "quicksilver",
            "train_shape": list(SHAPE),
            "supervision": "full",
            "field_weight": 1.0,
            "regularizer_weight": 0.0,
            "lr": 3e-3,
            "device": "cpu",
            "family_config": {"widths": [8, 16, 16], "teacher": "demons", "teacher_cache": str(path)},
        }
    )
    fam = cfg.learned_family()
    batch = _batch(samples)
    filled = fam.with_teacher(batch, cfg)  # the losses see the cached teacher fields, not zeros
    for b, s in enumerate(samples):
        assert torch.equal(
            filled["true_displacement"][b], cache.lookup(s["fixed_labels"], s["moving_labels"])
        )
    torch.manual_seed(0)
    nets = fam.build(2, cfg.family_config)
    opts = fam.optimizers(nets, cfg.lr)
    ctx = StepContext(
        config=cfg, family_config=cfg.family_config, similarity=similarity_module(cfg.similarity, 2)
    )
    with torch.no_grad():
        start = float(fam.losses(nets, batch, ctx)["field"])
    for step in range(15):
        ctx.step = step
        fam.train_step(nets, opts, batch, ctx)
    with torch.no_grad():
        end = float(fam.losses(nets, batch, ctx)["field"])
    assert end < 0.7 * start, (start, end)


@pytest.mark.shared_data
def test_shipped_weights_reproduce_the_teacher_on_a_held_out_pair(shared_data):
    """Held-out slice position: the student is closer to the teacher than the zero field and raises Dice."""
    from regcore.data.slices import slice_pairs
    from regcore.methods import registry
    from regcore.train.checkpoint import load_checkpoint
    from regcore.train.datasets import pair_to_sample

    method = registry.get("quicksilver").factory()
    path = method.default_checkpoint(2)
    assert path.is_file() and path.with_suffix(".md").is_file()
    data = load_checkpoint(path)
    pair = slice_pairs(shared_data / "brain3d", "held_out", axes=(0,), per_axis=1)[0]
    assert pair.meta["split"] == "held_out"
    cfg = config_from_dict(data["config"])
    s = pair_to_sample(pair, cfg)
    u_teacher, _ = run_teacher(s["fixed"], s["moving"], cfg.family_config.teacher, cfg.spacing_mm)
    nets, fam_cfg, _ = method.networks(registry.get("quicksilver").make_config(), 2, torch.device("cpu"))
    with torch.no_grad():
        u = method.family.predict(nets.eval(), s["moving"][None], s["fixed"][None], fam_cfg).displacement[0]
    student_error = float((u - u_teacher).norm(dim=0).mean())
    zero_error = float(u_teacher.norm(dim=0).mean())
    assert student_error < 0.8 * zero_error, (student_error, zero_error)
    fl, ml = s["fixed_labels"][None], s["moving_labels"][None]
    before = float(dice_per_pair(fl, ml, torch.zeros_like(u[None]))[0])
    after = float(dice_per_pair(fl, ml, u[None])[0])
    assert after > before + 0.02, (before, after)
