"""Malformed and hostile non-image inputs, generated on demand: landmark and label-name CSVs, training
recipes, checkpoints and bench manifests, plus one small VALID 2D pair the other cases lean on.

Each writer returns ``{case_id: (path, (kind, needle))}`` like :mod:`hostile_images`: ``kind`` is
"error" (a clear message containing ``needle``) or "ok" (sensible handling).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
Cases = dict[str, tuple[Path, tuple[str, str | None]]]


def write_pair(folder: Path) -> dict[str, Path]:
    """A valid 2D pair (32x32, 1 mm) with labels and landmarks: the background of many hostile cases."""
    f = Path(folder)
    f.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:32, :32]
    out = {}
    for name, shift in (("fixed", 0), ("moving", 2)):
        disk = (yy - 16 - shift) ** 2 + (xx - 16) ** 2 < 64
        img = (disk * 1.0 + 0.05 * np.sin(xx / 3.0)).astype(np.float32)
        nib.save(nib.Nifti1Image(img, np.eye(4)), f / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(disk.astype(np.uint8), np.eye(4)), f / f"{name}_labels.nii.gz")
        (f / f"{name}_landmarks.csv").write_text("id,x,y\n1,16,16\n2,10,20\n", encoding="utf-8")
        out[name] = f / f"{name}.nii.gz"
        out[f"{name}_labels"] = f / f"{name}_labels.nii.gz"
        out[f"{name}_landmarks"] = f / f"{name}_landmarks.csv"
    return out


def write_tables(folder: Path) -> Cases:
    """Landmark CSVs (read for a 2D 32x32 image) and label-name CSVs."""
    f = Path(folder)
    f.mkdir(parents=True, exist_ok=True)
    rows = {
        "landmarks_binary": (b"\x00\xff\xfe" * 300, "error", "landmarks_binary.csv"),
        "landmarks_nan": (b"id,x,y\n1,nan,3\n", "error", "landmarks_nan.csv: coordinates contain NaN"),
        "landmarks_inf": (b"id,x,y\n1,1e999,3\n", "error", "landmarks_inf.csv: coordinates contain NaN"),
        "landmarks_no_columns": (
            b"a,b,c\n1,2,3\n",
            "error",
            "landmarks_no_columns.csv: expected a header row",
        ),
        "landmarks_text_values": (b"id,x,y\n1,left,3\n", "error", "landmarks_text_values.csv: non-numeric"),
        "landmarks_duplicate_ids": (
            b"id,x,y\n1,1,1\n1,2,2\n",
            "error",
            "landmarks_duplicate_ids.csv: landmark ids",
        ),
        "landmarks_missing_cell": (b"id,x,y\n1,2\n", "error", "landmarks_missing_cell.csv"),
        "landmarks_latin1": ("id,x,y\n\xe9,1,2\n".encode("latin-1"), "error", "landmarks_latin1.csv"),
        "landmarks_3d_for_2d": (b"id,x,y,z\n1,1,2,3\n", "error", "landmarks_3d_for_2d.csv"),
        "landmarks_header_only": (b"id,x,y\n", "error", "landmarks_header_only.csv: no landmark rows"),
        "landmarks_far_outside_ok": (b"id,x,y\n1,1e12,-1e12\n2,5,5\n", "ok", None),
        "names_no_columns": (b"foo,bar\n1,2\n", "error", "names_no_columns.csv: expected a value column"),
        "names_bad_value": (b"value,name\nten,cortex\n", "error", "names_bad_value.csv: line 2"),
        "names_binary": (b"\xff\xfe\x00" * 100, "error", "names_binary.csv"),
    }
    out: Cases = {}
    for case, (data, kind, needle) in rows.items():
        p = f / f"{case}.csv"
        p.write_bytes(data)
        out[case] = (p, (kind, needle))
    return out


BASE_RECIPE = {
    "family": "voxelmorph",
    "dims": 2,
    "data": "shapes",
    "train_shape": [32, 32],
    "epochs": 1,
    "steps_per_epoch": 1,
    "batch_size": 1,
    "val_pairs": 1,
    "synthetic_pool": 2,
    "device": "cpu",
}


def write_recipes(folder: Path) -> Cases:
    """Training recipes whose values have the wrong type or range (all refused at validation)."""
    f = Path(folder)
    f.mkdir(parents=True, exist_ok=True)
    variants = {
        "recipe_epochs_float": ({"epochs": 1.5}, "TrainConfig.epochs must be an integer, got 1.5"),
        "recipe_epochs_bool": ({"epochs": True}, "TrainConfig.epochs must be an integer, got True"),
        "recipe_batch_size_list": ({"batch_size": [1]}, "TrainConfig.batch_size must be an integer, got [1]"),
        "recipe_lr_string": ({"lr": "0.1"}, "TrainConfig.lr must be a number"),
        "recipe_lr_inf": ({"lr": 1e999}, "TrainConfig.lr must be a finite number"),
        "recipe_seed_null": ({"seed": None}, "TrainConfig.seed must be an integer"),
        "recipe_unknown_key": ({"epochz": 3}, "unknown TrainConfig key 'epochz'"),
        "recipe_unknown_family": ({"family": "nope"}, "unknown learned family 'nope'"),
        "recipe_untrusted_module": ({"family": "evil", "family_module": "antigravity"}, "antigravity"),
        "recipe_family_config_list": ({"family_config": [1, 2]}, "family_config must be a mapping"),
        "recipe_giant_channels": (
            {"family_config": {"channels": [100000, 100000]}},
            "channels entries must be in",
        ),
        "recipe_train_shape_text": ({"train_shape": [32, "x"]}, "TrainConfig.train_shape must be a list"),
        "recipe_train_shape_huge": ({"train_shape": [100000, 100000]}, "TrainConfig.train_shape entries"),
        "recipe_dims_4": ({"dims": 4}, "TrainConfig.dims"),
        "recipe_folder_without_path": ({"data": "folder"}, "TrainConfig.data_path is required"),
        "recipe_data_enum_list": ({"data": ["shapes"]}, "TrainConfig.data must be one of"),
    }
    out: Cases = {}
    for case, (change, needle) in variants.items():
        p = f / f"{case}.json"
        text = json.dumps({**BASE_RECIPE, **change}).replace("Infinity", "1e999")
        p.write_text(text, encoding="utf-8")
        out[case] = (p, ("error", needle))
    raw = {
        "recipe_not_json": (b"{epochs: 3", "cannot parse config"),
        "recipe_top_level_list": (b"[1, 2, 3]", "config must be a mapping"),
        "recipe_binary": (b"\xff\xd8\xff" * 50, "recipe_binary.json"),
        "recipe_bad_toml": (b"epochs = = 3", "cannot parse config"),
        "recipe_oversized": (b'{"epochs": 1, "pad": "' + b"x" * (2 * 1024**2) + b'"}', "larger than"),
    }
    for case, (data, needle) in raw.items():
        p = f / (f"{case}.toml" if "toml" in case else f"{case}.json")
        p.write_bytes(data)
        out[case] = (p, ("error", needle))
    return out


class _Exploit:
    """Pickles to a call of os.system: weights_only loading must refuse it (and never run it)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def write_checkpoints(folder: Path) -> Cases:
    """Checkpoints derived from the shipped 2D VoxelMorph weights, each broken in one way."""
    f = Path(folder)
    f.mkdir(parents=True, exist_ok=True)
    good = torch.load(ROOT / "assets" / "models" / "voxelmorph2d.pt", weights_only=True)
    out: Cases = {}

    def save(case: str, data, needle: str) -> None:
        p = f / f"{case}.pt"
        torch.save(data, p)
        out[case] = (p, ("error", needle))

    first = next(iter(good["state_dict"]))
    save("ckpt_not_a_dict", [1, 2, 3], "is not a RegLab checkpoint")
    save("ckpt_wrong_format", {**good, "format": "other"}, "is not a RegLab checkpoint")
    save("ckpt_future_version", {**good, "version": 99}, "newer than supported")
    save("ckpt_missing_state", {k: v for k, v in good.items() if k != "state_dict"}, "lacks ['state_dict']")
    save("ckpt_state_not_tensors", {**good, "state_dict": {"a": "b"}}, "state_dict is not a mapping")
    save(
        "ckpt_shape_mismatch",
        {**good, "state_dict": {**good["state_dict"], first: torch.zeros(3)}},
        "do not fit family",
    )
    save("ckpt_giant_family_config", {**good, "family_config": {"channels": [512] * 12}}, "do not fit family")
    save(
        "ckpt_out_of_range_config",
        {**good, "family_config": {"channels": [10**7]}},
        "channels entries must be in",
    )
    save("ckpt_untrusted_module", {**good, "family": "evil", "family_module": "antigravity"}, "antigravity")
    save("ckpt_dims_7", {**good, "dims": 7}, "dims = 7")
    save("ckpt_spacing_nan", {**good, "spacing_mm": float("nan")}, "spacing_mm = nan")
    save("ckpt_train_shape_text", {**good, "train_shape": ["a", "b"]}, "train_shape")
    (f / "ckpt_garbage.pt").write_bytes(np.random.default_rng(1).bytes(5000))
    out["ckpt_garbage"] = (f / "ckpt_garbage.pt", ("error", "ckpt_garbage.pt is corrupt or unreadable"))
    (f / "ckpt_empty.pt").write_bytes(b"")
    out["ckpt_empty"] = (f / "ckpt_empty.pt", ("error", "ckpt_empty.pt"))
    valid = (ROOT / "assets" / "models" / "voxelmorph2d.pt").read_bytes()
    (f / "ckpt_truncated.pt").write_bytes(valid[: len(valid) // 3])
    out["ckpt_truncated"] = (f / "ckpt_truncated.pt", ("error", "ckpt_truncated.pt is corrupt or unreadable"))
    marker = f / "PWNED"
    with open(f / "ckpt_pickle_exploit.pt", "wb") as fh:
        pickle.dump({"format": "reglab-checkpoint", "x": _Exploit(marker)}, fh)
    out["ckpt_pickle_exploit"] = (
        f / "ckpt_pickle_exploit.pt",
        ("error", "ckpt_pickle_exploit.pt is corrupt"),
    )
    return out


def write_manifests(folder: Path, pair: dict[str, Path], images: dict[str, Path]) -> Cases:
    """Bench manifests (CSV of pairs); ``images`` maps case ids of hostile images to their paths."""
    f = Path(folder)
    f.mkdir(parents=True, exist_ok=True)
    head = "name,fixed,moving\n"
    good = f"good,{pair['fixed']},{pair['moving']}\n"
    rows = {
        "manifest_no_fixed_column": ("a,b\n1,2\n", "error", "needs a header with at least 'fixed,moving'"),
        "manifest_empty": ("", "error", "needs a header"),
        "manifest_binary": ("\x00\x01\x02garbage", "error", "manifest_binary.csv"),
        "manifest_missing_files": (head + "x,nothere.nii.gz,alsonot.nii.gz\n", "error", "nothere.nii.gz"),
        "manifest_traversal": (
            head + "x,../../../../../../etc/shadow.nii.gz,../../x.nii\n",
            "error",
            "shadow.nii.gz",
        ),
        "manifest_hostile_image_row": (
            head + f"bad,{images['nifti_declares_1_5gib_raw']},{pair['moving']}\n" + good,
            "ok",
            "liar.nii",
        ),
        "manifest_only_hostile_rows": (
            head + f"bad,{images['zip_bomb_declared']},{pair['moving']}\n",
            "ok",
            "bomb.zip",
        ),
    }
    out: Cases = {}
    for case, (text, kind, needle) in rows.items():
        p = f / f"{case}.csv"
        p.write_text(text, encoding="utf-8")
        out[case] = (p, (kind, needle))
    return out
