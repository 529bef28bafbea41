"""Run hostile-input cases in ONE process under an address-space limit and report each outcome as JSON.

    python tests/corpus_runner.py SPEC.json RESULTS.json

SPEC: ``{"mode": "engine" | "app", "watch": DIR, "limit_gib": 2, "timeout_s": 60, "warmup": [...],
"cases": [{"id", "entry": "cli" | "api" | "app", ...}]}``. After the imports and a warm-up (thread pools,
compiled kernels), ``RLIMIT_AS`` is set to the current address space + ``limit_gib``: no case can grow
the process by more. Per case the runner records the exit code or exception, stderr (Python-level and
file descriptor 2), wall time, peak resident memory (``VmHWM``, reset before each case through
``/proc/self/clear_refs``), and every file created or changed under ``watch`` outside the case's
``out`` folder, plus anything left in ``$TMPDIR``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")


def _snapshot(root: Path, skip: Path | None) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if skip is not None and (d == skip or skip in d.parents):
            dirnames[:] = []
            continue
        for name in filenames + [n for n in dirnames if (d / n).is_symlink()]:
            p = d / name
            with contextlib.suppress(OSError):
                st = p.lstat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


@contextlib.contextmanager
def _captured_stderr():
    """Python-level stderr/stdout and file descriptor 2, as text."""
    py_err, py_out = io.StringIO(), io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    sink = tempfile.TemporaryFile()
    os.dup2(sink.fileno(), 2)
    box = {"text": ""}
    try:
        with contextlib.redirect_stderr(py_err), contextlib.redirect_stdout(py_out):
            yield box
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        box["text"] = py_err.getvalue() + sink.read().decode("utf-8", "replace")
        box["stdout"] = py_out.getvalue()
        sink.close()


class CaseTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise CaseTimeout("case exceeded its time limit")


# -- entry points ------------------------------------------------------------------------------------
def _api(case: dict):
    from regcore.data import load_folder
    from regcore.image import Geometry
    from regcore.io import load_image, load_label_names, load_landmarks
    from regcore.metrics.overlap import dice_per_label, label_overlap
    from regcore.register import run_registration
    from regcore.train.checkpoint import build_nets, load_checkpoint
    from regcore.train.config import config_from_dict, load_config

    a = case.get("args", [])
    call = case["call"]
    if call == "load_image":
        return load_image(a[0], **case.get("kwargs", {}))
    if call == "load_landmarks":
        return load_landmarks(a[0], geometry=Geometry.identity((32, 32)))
    if call == "load_label_names":
        return load_label_names(a[0])
    if call == "load_config":
        return load_config(a[0])
    if call == "config_from_dict":
        return config_from_dict(json.loads(Path(a[0]).read_text(encoding="utf-8")))
    if call == "load_model":
        return build_nets(load_checkpoint(a[0]))
    if call == "label_overlap":
        lab = load_image(a[0], is_labels=True)
        t0 = time.perf_counter()
        out = label_overlap(lab, lab)
        n = len(out["dice"])
        return {"labels": n, "dice_mean": out["dice_mean"], "seconds": time.perf_counter() - t0}
    if call == "dice_array":
        import numpy as np

        arr = np.zeros((64, 64), np.int64)
        arr[10:20, 10:20] = int(a[0])
        return dice_per_label(arr, arr)
    if call == "register_labels":
        fixed, moving = load_image(a[0]), load_image(a[1])
        lab = load_image(a[2], is_labels=True)
        _, metrics = run_registration(
            fixed,
            moving,
            "affine",
            {"iterations": (5,), "levels": (1,)},
            fixed_labels=lab,
            moving_labels=lab,
            device="cpu",
        )
        return {"dice_mean": metrics.get("dice_mean")}
    if call == "load_folder":
        ds = load_folder(a[0])
        return {"errors": list(ds.errors), "subjects": len(ds.subjects)}
    raise ValueError(f"unknown api call {call}")


def _run_engine_case(case: dict) -> dict:
    res: dict = {}
    if case["entry"] == "cli":
        from regcore import cli

        with _captured_stderr() as box:
            try:
                res["rc"] = cli.main(case["argv"])
            except SystemExit as e:  # argparse usage errors
                res["rc"] = e.code
        res["stderr"], res["stdout"] = box["text"], box.get("stdout", "")
    else:
        with _captured_stderr() as box:
            try:
                value = _api(case)
                res["returned"] = (
                    value if isinstance(value, (dict, list, str, int, float)) else type(value).__name__
                )
            except Exception as e:  # noqa: BLE001 - the point: record what escaped
                res["exception"] = type(e).__name__
                res["message"] = str(e)
                res["value_or_type_error"] = isinstance(e, (ValueError, TypeError))
                res["traceback"] = "".join(traceback.format_exception(e))[-1500:]
        res["stderr"] = box["text"]
    return res


# -- the app's upload decoder (AppTest) ---------------------------------------------------------------
_AT = {}


def _app():
    from streamlit.testing.v1 import AppTest

    if "at" not in _AT:
        root = Path(__file__).resolve().parents[1]
        os.chdir(root)
        at = AppTest.from_file(str(root / "app.py"), default_timeout=120).run()
        at.switch_page("pages/data.py").run()
        at.segmented_control(key="data_source").set_value("Upload").run()
        _AT["at"] = at
    return _AT["at"]


def _run_app_case(case: dict) -> dict:
    at = _app()
    before = at.session_state["pair"]
    for key in (
        "up_fixed",
        "up_moving",
        "up_fixed_labels",
        "up_moving_labels",
        "up_fixed_lm",
        "up_moving_lm",
        "up_names",
    ):
        spec = case["uploads"].get(key)
        at.file_uploader(key=key).set_value(
            None if spec is None else (spec[0], Path(spec[1]).read_bytes(), "application/octet-stream")
        )
    with _captured_stderr() as box:
        at.run()
        at.button(key="data_use_upload").click().run()
    errors = [e.value for e in at.error]
    return {
        "errors": errors,
        "exception": [e.value for e in at.exception],
        "stderr": box["text"],
        "pair_kept": at.session_state["pair"] is before,
        "pair_name": at.session_state["pair"].name,
        "page_alive": any("Current pair" in h.value for h in at.subheader),
    }


def main(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    watch = Path(spec["watch"])
    tmpdir = Path(tempfile.gettempdir())
    runner = _run_app_case if spec["mode"] == "app" else _run_engine_case
    for case in spec.get("warmup", []):
        runner(case)
    if spec["mode"] == "app":
        _app()
    limit = _status("VmSize") + int(spec.get("limit_gib", 2) * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _on_alarm)
    results = []
    for case in spec["cases"]:
        out_dir = Path(case["out"]) if case.get("out") else None
        before = _snapshot(watch, out_dir)
        tmp_before = set(os.listdir(tmpdir))
        _reset_peak()
        t0 = time.perf_counter()
        signal.alarm(int(spec.get("timeout_s", 60)))
        try:
            res = runner(case)
        except CaseTimeout as e:
            res = {"timeout": True, "exception": "CaseTimeout", "message": str(e)}
        except MemoryError:
            res = {"exception": "MemoryError", "message": "the case hit the address-space limit"}
        except Exception as e:  # noqa: BLE001 - the runner itself must report, not die
            _AT.clear()  # a fresh app session for the next case
            res = {
                "exception": f"runner: {type(e).__name__}",
                "message": str(e),
                "traceback": "".join(traceback.format_exception(e))[-2000:],
            }
        finally:
            signal.alarm(0)
        res["seconds"] = time.perf_counter() - t0
        res["peak_rss_mb"] = _status("VmHWM") / 1024**2
        after = _snapshot(watch, out_dir)
        res["outside_writes"] = sorted(p for p, v in after.items() if before.get(p) != v)
        res["tmp_leftovers"] = sorted(set(os.listdir(tmpdir)) - tmp_before)
        res["out_exists"] = bool(out_dir and out_dir.exists())
        if out_dir and (out_dir / "results.json").is_file():
            res["results_json"] = (out_dir / "results.json").read_text(encoding="utf-8")[:20000]
        results.append({"id": case["id"], "entry": case["entry"], **res})
    Path(out_path).write_text(
        json.dumps({"results": results, "limit_bytes": limit}, default=str), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
