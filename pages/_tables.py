"""Run tables for people (Register, Evaluate): titled columns with units, 3 significant digits, "–" for
missing values, and mean Dice over the labels present in both images unless the user includes all.

The DataFrames hold numbers (sorting works; tests read them); :func:`show` draws them through
:func:`regcore.viz.format_columns`. Exports (CSV, JSON, QA report) read ``RunRecord.metrics``, never these.
"""

from __future__ import annotations

import weakref

import pandas as pd
import streamlit as st

from regcore import viz
from regcore.metrics.presence import LabelPresence, mean_over_present
from regcore.report import record_presence

SUMMARY_KEYS = (
    "dice_mean",
    "hd95_mean_mm",
    "tre_mean_mm",
    "folding_percent",
    "sdlogj",
    "ncc",
    "runtime_s",
    "peak_memory_mb",
    "device",
)
"""Metrics keys of the comparison table, in order (titles: :data:`regcore.viz.METRIC_COLUMNS`)."""

DICE_IN_BOTH = "Mean Dice (labels in both)"
DICE_ALL = "Mean Dice (all labels)"

_PRESENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def presence(record) -> LabelPresence | None:
    """Labels the run's fixed and moving maps both hold (computed once per run); None without labels."""
    if record not in _PRESENCE:
        _PRESENCE[record] = record_presence(record)
    return _PRESENCE[record]


def dice_title(include_all: bool) -> str:
    """Title of the mean Dice column."""
    return DICE_ALL if include_all else DICE_IN_BOTH


def mean_dice(record, metrics: dict, include_all: bool) -> float | None:
    """Mean Dice of ``metrics`` (the run's after or before dict): the engine's ``dice_mean`` when
    ``include_all``, else the mean over the labels present in both images."""
    if include_all or not metrics.get("dice"):
        return metrics.get("dice_mean")
    return mean_over_present(metrics["dice"], presence(record)).mean


def skipped_labels(runs: dict) -> dict[str, tuple[str, ...]]:
    """``{pair name: structures present in only one image}`` for the pairs of ``runs`` that have some."""
    out: dict[str, tuple[str, ...]] = {}
    for r in runs.values():
        p = presence(r)
        if p is not None and p.skipped and r.pair_name not in out:
            out[r.pair_name] = p.skipped
    return out


def comparison_table(runs: dict, include_all: bool = False) -> pd.DataFrame:
    """One row per run (plus a 'before registration' row per pair): the headline metrics side by side, titled
    for people. A "Pair" column appears only when the runs come from more than one pair (names are long)."""
    rows, seen_pairs = [], set()
    several_pairs = len({r.pair_name for r in runs.values()}) > 1
    for label, r in runs.items():
        if r.pair_name not in seen_pairs:
            seen_pairs.add(r.pair_name)
            before = r.before_metrics
            rows.append(
                {
                    "Run": "before registration",
                    **({"Pair": r.pair_name} if several_pairs else {}),
                    **{
                        viz.metric_title(k): before.get(k)
                        for k in SUMMARY_KEYS
                        if k not in ("runtime_s", "peak_memory_mb")
                    },
                    viz.metric_title("dice_mean"): mean_dice(r, before, include_all),
                }
            )
        row = {
            "Run": label,
            **({"Pair": r.pair_name} if several_pairs else {}),
            **{viz.metric_title(k): r.metrics.get(k, getattr(r.result, k, None)) for k in SUMMARY_KEYS},
        }
        row[viz.metric_title("dice_mean")] = mean_dice(r, r.metrics, include_all)
        rows.append(row)
    df = pd.DataFrame(rows).rename(columns={viz.metric_title("dice_mean"): dice_title(include_all)})
    return df.dropna(axis=1, how="all")


def per_structure(runs: dict, key: str, include_all: bool = True) -> pd.DataFrame:
    """Structures x runs table of ``metrics[key]`` (e.g. 'dice', 'hd95', 'tre'); without ``include_all``
    a structure present in only one image of a run's pair is left blank for that run."""
    cols = {}
    for label, r in runs.items():
        values = dict(r.metrics.get(key) or {})
        p = None if include_all or key == "tre" else presence(r)
        if p is not None:
            values = {k: v for k, v in values.items() if k not in set(p.skipped)}
        if values:
            cols[label] = values
    return pd.DataFrame(cols).dropna(how="all") if cols else pd.DataFrame()


def settings_table(runs: dict) -> pd.DataFrame:
    """Parameters (titled as on the Register page) x runs, as text: the method (with any stage before it,
    e.g. "affine -> demons") and the settings it ran with (``regcore.config.settings_of``; "auto" resolved
    where the method records it); the rows where the runs differ come first. Empty when no run has settings."""
    from pages._widgets import param_title
    from regcore.config import settings_of

    cols = {}
    for label, r in runs.items():
        settings = settings_of(r.result.config)
        if settings is None:
            continue
        stages = r.result.extras.get("stages") or []  # e.g. an affine stage first (regcore.pipeline)
        shown = {"Method": " -> ".join(str(s.get("method")) for s in stages) or r.method}
        shown |= {
            param_title(k): ", ".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
            for k, v in settings.items()
        }
        cols[label] = shown
    if not cols:
        return pd.DataFrame()
    df = pd.DataFrame(cols)
    differs = df.nunique(axis=1, dropna=False) > 1
    return pd.concat([df[differs], df[~differs]])


def column_help(df: pd.DataFrame) -> dict[str, st.column_config.Column]:
    """Help icons for the columns of ``df`` that the glossary explains (:mod:`regcore.glossary`)."""
    from regcore.glossary import help_for_column

    return {c: st.column_config.Column(help=h) for c in df.columns if (h := help_for_column(str(c)))}


def show(df: pd.DataFrame, **kwargs) -> None:
    """``st.dataframe`` of ``df`` with numbers for people (3 significant digits, "–" when missing) and the
    glossary's explanation on each metric column's help icon."""
    kwargs.setdefault("column_config", column_help(df))
    st.dataframe(viz.format_columns(df), **kwargs)
