"""Idle dashboard server CPU: a fresh `streamlit run app.py` must stay under 5 % of one core when idle.

Starts a server as `make app` does (tests/app_server.py: the repo's .streamlit/config.toml, a free
port), opens Home once in headless chromium until Home is done, closes the browser, then samples the
server process (and its children) every ``--interval`` seconds for ``--minutes``: CPU in % of ONE core
(psutil; /proc/<pid>/stat when psutil is missing). Also counts "Inotify" lines in the server log (a
file watcher walking .venv or the data would log those and burn CPU).

Usage: ``nice -n 10 .venv/bin/python benchmarks/idle_cpu.py [--minutes 10] [--interval 5]``;
writes ``benchmarks/results/idle_cpu.json`` and ``.md`` (the command is at the top of the .md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _app_browser import (  # noqa: E402
    ROOT,
    chromium,
    machine_load,
    open_home,
    process_cpu_seconds,
    settle,
    start_app_server,
    stop_app_server,
)

TARGET_PERCENT = 5.0


def sample_cpu(pid: int, minutes: float, interval_s: float) -> list[float]:
    """CPU of ``pid`` in % of one core, one value per ``interval_s`` window, for ``minutes``."""
    samples: list[float] = []
    end = time.monotonic() + minutes * 60
    last_cpu, last_t = process_cpu_seconds(pid), time.monotonic()
    while time.monotonic() < end:
        time.sleep(interval_s)
        cpu, t = process_cpu_seconds(pid), time.monotonic()
        samples.append(100.0 * (cpu - last_cpu) / (t - last_t))
        last_cpu, last_t = cpu, t
    return samples


def markdown(r: dict) -> str:
    ok = "yes" if r["pass"] else "NO"
    return "\n".join(
        [
            "# Idle dashboard server CPU",
            "",
            f"Command: `{r['command']}`",
            "",
            f"{r['date']}; {r['machine']['cpus']} CPUs; `uptime` before: `{r['machine_before']['uptime']}`; "
            f"after: `{r['machine_after']['uptime']}`.",
            "",
            "| check | result |",
            "|---|---|",
            f"| Home opened once, then browser closed; Home done after | {r['home']['home_done_s']:.1f} s |",
            f"| idle window | {r['minutes']:g} min, {r['n_samples']} samples of {r['interval_s']:g} s |",
            f"| server CPU mean / max (% of one core) | {r['mean_percent']:.2f} / {r['max_percent']:.2f} |",
            f"| under {TARGET_PERCENT:g} % (mean) | {ok} |",
            f"| 'Inotify' lines in the server log | {r['inotify_log_lines']} |",
            f"| server still up at the end | {r['server_alive_at_end']} |",
            "",
            "CPU includes the server's child processes; a busy machine inflates nothing here (CPU time, "
            "not wall time), but the Home timing above is wall time.",
            "",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="idle window to sample (default 10)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds per CPU sample (default 5)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "idle_cpu"), help="output stem")
    args = ap.parse_args()
    if args.minutes <= 0 or args.interval <= 0:
        raise SystemExit("--minutes and --interval must be positive")

    log = ROOT / "test-artifacts" / "idle_cpu_server.log"  # ignored by git
    log.parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    before = machine_load()
    proc, url = start_app_server(log)
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            home = open_home(page, url)
            settle(page)
            page.close()
        samples = sample_cpu(proc.pid, args.minutes, args.interval)
        alive = proc.poll() is None
    finally:
        stop_app_server(proc)
    text = log.read_text(encoding="utf-8", errors="replace")
    result = {
        "command": "nice -n 10 .venv/bin/python benchmarks/idle_cpu.py " + shlex.join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": before,
        "machine_before": before,
        "machine_after": machine_load(),
        "home": home,
        "minutes": args.minutes,
        "interval_s": args.interval,
        "n_samples": len(samples),
        "mean_percent": statistics.fmean(samples) if samples else float("nan"),
        "max_percent": max(samples) if samples else float("nan"),
        "samples_percent": [round(s, 3) for s in samples],
        "server_alive_at_end": alive,
        "inotify_log_lines": sum("inotify" in line.lower() for line in text.splitlines()),
        "target_percent": TARGET_PERCENT,
    }
    result["pass"] = bool(samples) and alive and result["mean_percent"] < TARGET_PERCENT
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    Path(args.out).with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
