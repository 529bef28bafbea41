"""A browser session's pair, runs and page choices on disk, so a page reload or a server restart loses nothing.

Every browser session gets a random id in its URL (``?session=<32 hex>``); its state lives in
``<root>/live/<id>/``, where ``<root>`` is ``REGLAB_SESSION_DIR`` (default ``sessions/`` beside app.py;
an empty value turns persistence off)::

    pair.json                 {"sample": [dataset, dims, contrast]} for a built-in sample pair, else
                              {"folder": "pair"}: the pair's images in pair/ (written by regcore.io)
    pair/                     fixed.nii.gz, moving.nii.gz, *_labels.nii.gz, *_landmarks.csv, names.json
    runs.json                 [{"label": ..., "folder": "runs/003", "sample": [...] | null}, ...] in order
    runs/NNN/                 one run folder each (regcore.run_folder.save_run)
    choices.json              page choices that outlive a page (``KEPT_CHOICES``)

A reload opens the same URL, finds the id and restores everything once per Streamlit session
(:func:`restore`). The id is 128 random bits: knowing another visitor's URL is the only way to
reach their data, as with any share-by-link service. ``<root>/saved/<name>/`` holds sessions saved
under a name (:func:`save_named`), which every visitor of this server can reopen: saving under a name
is the user's choice to share. Writes are atomic (a temporary folder, then a rename) and happen on one
background thread, so a page never waits for gzip; :func:`flush` waits for them (tests, shutdown).
Sessions untouched for ``REGLAB_SESSION_DAYS`` (default 14) are removed when the server starts one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import streamlit as st

LOG = logging.getLogger("reglab.app")
APP_ROOT = Path(__file__).resolve().parents[1]
URL_PARAM = "session"
ID_PATTERN = re.compile(r"[0-9a-f]{32}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")
MAX_RUNS_KEPT = 24
"""Runs a session keeps on disk (the oldest are dropped from disk first; memory is the page's business)."""
KEPT_CHOICES = {
    "data_source": "data",
    "data_sample_ds": "data",
    "data_sample_dims": "data",
    "data_sample_contrast": "data",
    "eval_runs": "evaluate",
    "eval_all_labels": "evaluate",
}
"""Widget keys whose values survive leaving their page and a reload (see :func:`keep_choices`), and the
page (``pages/_nav.py`` name) that draws each."""
_ID_KEY = "_reglab_browser_session"
_RESTORED_KEY = "_reglab_restored"
_SAVED_CHOICES_KEY = "_reglab_saved_choices"
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reglab-session-store")
_PENDING: list[Future] = []
_PENDING_LOCK = threading.Lock()


def root() -> Path | None:
    """The sessions folder, or None when persistence is off (``REGLAB_SESSION_DIR=""``)."""
    value = os.environ.get("REGLAB_SESSION_DIR")
    if value is None:
        return APP_ROOT / "sessions"
    return Path(value).expanduser() if value.strip() else None


def browser_session_id() -> str:
    """This browser session's id: from the URL when it names one, else a new one written into the URL."""
    sid = st.session_state.get(_ID_KEY)
    if sid is None:
        asked = st.query_params.get(URL_PARAM, "")
        sid = asked if ID_PATTERN.fullmatch(asked or "") else secrets.token_hex(16)
        st.session_state[_ID_KEY] = sid
    if st.query_params.get(URL_PARAM) != sid:  # page links drop the query string: put it back
        st.query_params[URL_PARAM] = sid
    return sid


def session_dir(sid: str | None = None) -> Path | None:
    """``<root>/live/<id>`` of this (or the given) browser session; None when persistence is off."""
    base = root()
    if base is None:
        return None
    sid = sid or browser_session_id()
    if not ID_PATTERN.fullmatch(sid):
        raise ValueError(f"session id {sid!r} is not 32 hexadecimal digits")
    return base / "live" / sid


# -- writing ------------------------------------------------------------------------------------------
def _submit(job, *args) -> None:
    def logged() -> None:
        try:
            job(*args)
        except Exception:  # noqa: BLE001 - persistence must never break a page; the log says why
            LOG.exception("saving the session failed")

    with _PENDING_LOCK:
        _PENDING[:] = [f for f in _PENDING if not f.done()]
        _PENDING.append(_WRITER.submit(logged))


def flush(timeout_s: float = 60.0) -> None:
    """Wait until every queued write has landed on disk."""
    with _PENDING_LOCK:
        pending = list(_PENDING)
    for f in pending:
        f.result(timeout=timeout_s)


def _sample_ref(pair) -> list | None:
    ref = (getattr(pair, "meta", None) or {}).get("reglab_sample")
    return list(ref) if ref else None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _write_pair(folder: Path, pair) -> None:
    from regcore.atomic import atomic_dir
    from regcore.io import save_image, save_landmarks

    folder.mkdir(parents=True, exist_ok=True)
    ref = _sample_ref(pair)
    if ref is None:
        with atomic_dir(folder / "pair") as tmp:
            for role in ("fixed", "moving", "fixed_labels", "moving_labels"):
                img = getattr(pair, role)
                if img is not None:
                    save_image(img, tmp / f"{role}.nii.gz")
            for role in ("fixed_landmarks", "moving_landmarks"):
                if getattr(pair, role) is not None:
                    save_landmarks(getattr(pair, role), tmp / f"{role}.csv")
            names = {str(k): v for k, v in (pair.label_names or {}).items()}
            _write_json(tmp / "names.json", {"name": pair.name, "label_names": names})
    _write_json(folder / "pair.json", {"sample": ref} if ref else {"folder": "pair"})


def save_pair(pair) -> None:
    """Queue writing the session's current pair (a sample pair is stored as its name, not its voxels)."""
    folder = session_dir()
    if folder is not None:
        _submit(_write_pair, folder, pair)


def _write_runs(folder: Path, records: list[tuple[str, Any]]) -> None:
    from regcore.run_folder import save_run

    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / "runs.json"
    old = {e["label"]: e for e in _read_json(index_path, [])}
    entries = []
    for label, record in records[-MAX_RUNS_KEPT:]:
        entry = old.get(label)
        if entry is None or not (folder / entry["folder"]).is_dir():
            used = {e["folder"] for e in old.values()} | {e["folder"] for e in entries}
            n = 1 + max((int(f.rsplit("/", 1)[-1]) for f in used), default=0)
            entry = {"label": label, "folder": f"runs/{n:03d}", "sample": _sample_ref(record.pair)}
            save_run(record, folder / entry["folder"])
        entries.append(entry)
    _write_json(index_path, entries)
    kept = {e["folder"] for e in entries}
    for e in old.values():
        if e["folder"] not in kept:
            shutil.rmtree(folder / e["folder"], ignore_errors=True)


def save_runs(runs: dict) -> None:
    """Queue writing the session's runs (``{label: RunRecord}``, in order); unchanged ones are kept as they are."""
    folder = session_dir()
    if folder is not None:
        _submit(_write_runs, folder, list(runs.items()))


def keep_choices(page: str) -> None:
    """Keep the page choices alive while another ``page`` is shown, and on disk when they changed.

    Streamlit forgets a widget's value when a run does not draw the widget; assigning the value to
    itself on the other pages keeps it (Streamlit's documented idiom). Not on the page that draws it,
    where the assignment would fight the widget's own default.
    """
    now = {}
    for key, owner in KEPT_CHOICES.items():
        if key in st.session_state:
            if owner != page:
                st.session_state[key] = st.session_state[key]
            now[key] = st.session_state[key]
    if now != st.session_state.get(_SAVED_CHOICES_KEY):
        st.session_state[_SAVED_CHOICES_KEY] = dict(now)
        folder = session_dir()
        if folder is not None:
            _submit(_write_choices, folder, now)


def _write_choices(folder: Path, choices: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "choices.json", choices)


# -- reading ------------------------------------------------------------------------------------------
def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable ({exc})") from None


def _read_pair(folder: Path, sample_pair):
    """The pair stored in ``folder`` (None when none is); ``sample_pair(dataset, dims, contrast)``."""
    from regcore.data import Pair
    from regcore.io import load_image, load_landmarks

    info = _read_json(folder / "pair.json", None)
    if info is None:
        return None
    if info.get("sample"):
        return sample_pair(*info["sample"])
    d = folder / "pair"
    meta = _read_json(d / "names.json", {})
    names = {int(k): str(v) for k, v in (meta.get("label_names") or {}).items()}
    images = {
        role: load_image(d / f"{role}.nii.gz", is_labels="labels" in role, label_names=names or None)
        for role in ("fixed", "moving", "fixed_labels", "moving_labels")
        if (d / f"{role}.nii.gz").is_file()
    }
    marks = {
        role: load_landmarks(d / f"{role}.csv", geometry=images[role.split("_")[0]].geometry)
        for role in ("fixed_landmarks", "moving_landmarks")
        if (d / f"{role}.csv").is_file()
    }
    return Pair(name=str(meta.get("name") or "restored pair"), label_names=names or None, **images, **marks)


def _read_runs(folder: Path, sample_pair) -> dict:
    from regcore.run_folder import load_run
    from regcore.run_record import RunRecord

    runs = {}
    for entry in _read_json(folder / "runs.json", []):
        record = load_run(folder / entry["folder"])
        if entry.get("sample"):  # the sample's own Pair: ground truth and provenance come back too
            record = RunRecord(
                sample_pair(*entry["sample"]),
                record.result,
                record.metrics,
                label=entry["label"],
                before=record.before_metrics,
            )
        runs[entry["label"]] = record
    return runs


def load_into_state(folder: Path, sample_pair) -> int:
    """Put the pair, runs and choices stored in ``folder`` into this session; returns the number of runs."""
    pair = _read_pair(folder, sample_pair)
    runs = _read_runs(folder, sample_pair)
    if pair is not None:
        st.session_state["pair"] = pair
    st.session_state.setdefault("runs", {}).update(runs)
    for key, value in _read_json(folder / "choices.json", {}).items():
        if key in KEPT_CHOICES:
            st.session_state[key] = value
    return len(runs)


def restore(sample_pair) -> None:
    """Once per Streamlit session: bring back what this browser session's id has on disk."""
    if st.session_state.get(_RESTORED_KEY):
        return
    st.session_state[_RESTORED_KEY] = True
    folder = session_dir()
    if folder is None or not folder.is_dir():
        _prune_old_sessions()
        return
    try:
        n = load_into_state(folder, sample_pair)
    except Exception as exc:  # noqa: BLE001 - a damaged session folder must not lock the visitor out
        LOG.exception("restoring session %s failed", folder)
        st.toast(f"Could not restore your earlier session: {exc}", icon=":material/warning:")
        return
    if n:
        st.toast(f"Restored your session: {n} run{'s' if n != 1 else ''}", icon=":material/restore:")


def _prune_old_sessions() -> None:
    base = root()
    if base is None or not (base / "live").is_dir():
        return
    days = float(os.environ.get("REGLAB_SESSION_DAYS", "14") or 14)
    cutoff = time.time() - days * 86400
    for d in (base / "live").iterdir():
        try:
            if d.is_dir() and d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


# -- named sessions -----------------------------------------------------------------------------------
def saved_names() -> list[str]:
    """Names of the sessions saved on this server, newest first."""
    base = root()
    if base is None or not (base / "saved").is_dir():
        return []
    found = [d for d in (base / "saved").iterdir() if d.is_dir() and NAME_PATTERN.fullmatch(d.name)]
    return [d.name for d in sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)]


def _named_dir(name: str) -> Path:
    base = root()
    if base is None:
        raise ValueError("saving sessions is off on this server (REGLAB_SESSION_DIR is empty)")
    name = (name or "").strip()
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"session name {name!r}: use 1-64 letters, digits, spaces, '-', '_' or '.', starting with a "
            "letter or digit"
        )
    return base / "saved" / name


def save_named(name: str) -> Path:
    """Copy this session's folder to ``saved/<name>`` (replacing an older one of that name)."""
    target = _named_dir(name)
    flush()
    source = session_dir()
    if source is None or not source.is_dir():
        raise ValueError("nothing to save yet: load a pair or run a registration first")
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def open_named(name: str, sample_pair) -> int:
    """Load ``saved/<name>`` into this session (its runs join the current ones); returns the run count."""
    source = _named_dir(name)
    if not source.is_dir():
        raise ValueError(f"no saved session named {name!r} on this server")
    n = load_into_state(source, sample_pair)
    if st.session_state.get("pair") is not None:
        save_pair(st.session_state["pair"])
    save_runs(st.session_state.get("runs", {}))
    return n
