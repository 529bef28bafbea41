"""What the Train page shows about runs: human labels, runs-table rows, settings tables, progress text, curves.

Pure functions of the run records ``regcore.train.jobs`` returns (no streamlit), so they are easy to test.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from regcore.train.status import finite_or_none, headline_validation

FIELD_LABELS = {
    "family": "Family",
    "dims": "Dimensions",
    "data": "Training data",
    "data_path": "Data folder or manifest",
    "spacing_mm": "Resolution (mm per voxel)",
    "train_shape": "Training grid (voxels)",
    "supervision": "Supervision",
    "similarity": "Similarity",
    "similarity_weight": "Similarity weight",
    "regularizer_weight": "Regulariser weight",
    "dice_weight": "Dice weight",
    "field_weight": "True-field weight",
    "epochs": "Epochs",
    "steps_per_epoch": "Steps per epoch",
    "batch_size": "Batch size",
    "lr": "Learning rate",
    "augment": "Spatial augmentation",
    "intensity_augment": "Intensity augmentation",
    "crop_shape": "Training crop (voxels)",
    "deform_augment": "Deformed-copy share",
    "deform_augment_mm": "Deformed-copy size (mm)",
    "synthetic_pool": "Synthetic pool size",
    "val_pairs": "Validation pairs",
    "seed": "Random seed",
    "time_limit_min": "Time limit (min)",
    "device": "Device",
    "threads": "CPU threads",
    "init_checkpoint": "Start from weights",
}
PAIR_DATA = "pair"
"""The data choice "train on the session's pair" (not a DataSource: the run stores it as a folder)."""
DATA_TITLES = {
    "brain": "Sample brains",
    "shapes": "Synthetic shapes",
    "mixed": "Sample brains + shapes",
    "folder": "Folder or manifest (path under Advanced)",
    "slices": "2D slices of a labelled 3D folder",
    PAIR_DATA: "Current pair (from the Data page)",
}
STATE_TITLES = {
    "queued": "Queued",
    "running": "Running",
    "stopped": "Stopped",
    "finished": "Finished",
    "failed": "Failed",
}
PAIR_MANIFEST_TAIL = "pair/pairs.csv"


def field_label(name: str) -> str:
    """Human label of a recipe field (``lr`` -> ``Learning rate``); unknown names: words, capitalised."""
    return FIELD_LABELS.get(name) or name.replace("_", " ").strip().capitalize()


def data_title(config: dict[str, Any]) -> str:
    """What a run trained on, in words ("Current pair" for a run started on the session's pair)."""
    data = str(config.get("data", ""))
    if data == "folder" and str(config.get("data_path", "")).replace("\\", "/").endswith(PAIR_MANIFEST_TAIL):
        return "Current pair"
    return DATA_TITLES.get(data, data)


def progress_text(state: str, message: str) -> str:
    """``"Finished: val Dice 0.712"``; the state is said once even when the message repeats it."""
    title = STATE_TITLES.get(state, state.capitalize())
    message = (message or "").strip()
    while message.lower().startswith(state.lower()) and state:
        message = message[len(state) :].lstrip(" :-")
    return f"{title}: {message}" if message else title


def validation_metric(epochs: list[dict[str, Any]]) -> tuple[str, str, str | None]:
    """``(label, value, delta)`` of the headline validation metric of a run's epoch records: the Dice and its
    gain over identity, or, when the validation pairs have no labels (Dice empty), the loss and its change
    since the first epoch (lower is better)."""
    head = headline_validation(epochs[-1])
    if head is None:
        return "Validation loss", "n/a", None
    name, value = head
    if name == "Dice":
        before = finite_or_none(epochs[0].get("val_dice_before"))
        return (
            "Validation Dice",
            f"{value:.3f}",
            None if before is None else f"{value - before:+.3f} vs identity",
        )
    start = finite_or_none(epochs[0].get("val_loss"))
    return "Validation loss", f"{value:.3f}", None if start is None else f"{value - start:+.3f} since epoch 1"


def format_value(value: Any) -> str:
    """A setting's value as text: lists ``96 × 112``, booleans yes/no, floats short."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " × ".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if value is None or value == "":
        return "-"
    return str(value)


def settings(config: dict[str, Any]) -> dict[str, str]:
    """A run's recipe (``config.json``) flattened to ``{human label: text}``; family fields are prefixed
    with the family's title and ``family_module`` is left out."""
    out: dict[str, str] = {}
    for name, value in config.items():
        if name == "family_config" and isinstance(value, dict):
            for k, v in value.items():
                out[f"{config.get('family', 'family')}: {field_label(k)}"] = format_value(v)
        elif name == "data":
            out[field_label(name)] = data_title(config)
        elif name != "family_module":
            out[field_label(name)] = format_value(value)
    return out


def settings_table(config: dict[str, Any]) -> pd.DataFrame:
    """Two columns, Setting and Value, one row per recipe field."""
    return pd.DataFrame([{"Setting": k, "Value": v} for k, v in settings(config).items()])


def settings_diff(configs: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The settings that differ between runs: a Setting column, then one column per run id."""
    flat = {run: settings(cfg) for run, cfg in configs.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    rows = [
        {"Setting": k, **{run: f.get(k, "-") for run, f in flat.items()}}
        for k in keys
        if len({f.get(k, "-") for f in flat.values()}) > 1
    ]
    return pd.DataFrame(rows)


def runs_rows(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs table: one row per run with human column names and states."""
    rows = []
    for r in runs:
        cfg = r.get("config") or {}
        state = str(r.get("state", ""))
        rows.append(
            {
                "Run": r["run_id"],
                "State": STATE_TITLES.get(state, state),
                "Epoch": format_value(r.get("epoch")),
                "Step": f"{r.get('step') or 0}/{r['total_steps']}" if r.get("total_steps") else "-",
                "Family": cfg.get("family"),
                "Data": data_title(cfg),
                "Supervision": cfg.get("supervision"),
                "Message": progress_text(state, r.get("message", "")).split(": ", 1)[-1]
                if r.get("message")
                else "",
            }
        )
    return pd.DataFrame(rows)


def curves(records_by_run: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """Loss terms per step (left) and validation Dice / folding % per epoch (right) of one or more runs.

    Axes: every axis titled; epochs on whole-number ticks; Dice from 0 to 1; folding % from 0.
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Training loss terms", "Validation"),
        specs=[[{}, {"secondary_y": True}]],
    )
    tagged = len(records_by_run) > 1
    max_epoch, max_folding = 1.0, 0.0
    for run_id, recs in records_by_run.items():
        steps = pd.DataFrame([r for r in recs if r.get("kind") == "step"])
        epochs = pd.DataFrame([r for r in recs if r.get("kind") == "epoch"])
        tag = f"{run_id}: " if tagged else ""
        if not steps.empty:
            for term in [c for c in steps.columns if c not in ("kind", "epoch", "step", "time_s")]:
                fig.add_trace(
                    go.Scatter(x=steps["step"], y=steps[term], name=f"{tag}{term}", mode="lines"), 1, 1
                )
        if not epochs.empty:
            max_epoch = max(max_epoch, float(epochs["epoch"].max()))
            if "val_folding_percent" in epochs:
                max_folding = max(max_folding, float(epochs["val_folding_percent"].fillna(0).max()))
            fig.add_trace(
                go.Scatter(
                    x=epochs["epoch"], y=epochs.get("val_dice"), name=f"{tag}val Dice", mode="lines+markers"
                ),
                1,
                2,
            )
            fig.add_trace(
                go.Scatter(
                    x=epochs["epoch"],
                    y=epochs.get("val_folding_percent"),
                    name=f"{tag}folding %",
                    mode="lines+markers",
                    line={"dash": "dot"},
                ),
                1,
                2,
                secondary_y=True,
            )
    fig.update_xaxes(title_text="Step", row=1, col=1)
    fig.update_yaxes(title_text="Loss", row=1, col=1)
    fig.update_xaxes(
        title_text="Epoch", tickmode="linear", tick0=0, dtick=max(1, math.ceil(max_epoch / 10)), row=1, col=2
    )
    fig.update_yaxes(title_text="Dice", range=[0, 1], row=1, col=2)
    fig.update_yaxes(
        title_text="Folding %", range=[0, max(1.0, 1.1 * max_folding)], row=1, col=2, secondary_y=True
    )
    fig.update_layout(height=360, margin={"t": 40, "b": 10})
    return fig
