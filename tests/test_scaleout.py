"""Scale-out, end to end (slow): a local Ray cluster started here (`ray start --head`) runs a benchmark
through --address; the embedded Ray engine gives the same metrics as the serial engine; a worker
killed with SIGKILL mid-task is retried and every result arrives; a rerun after a killed driver skips
finished tasks; 2-process DDP training matches 1-process training with the same global batch, and
resumes. Each Ray test costs a few Ray/interpreter start-ups (~10-30 s on 2 busy cores)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_batch import make_manifest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
COMPARED = ("dice_mean", "hd95_mean_mm", "folding_percent", "sdlogj")


def _env() -> dict:
    path = os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "REGCORE_PLUGINS": "batch_slow_plugin"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_head(temp: Path):
    """One `ray start --head --block` on a free loopback port, logging to temp/start.log.

    Returns (process, address) once Ray says it started, or (process, None) when it did not: Ray gives the
    raylet a fixed 30 s to register, which a 2-core machine busy with another test can miss."""
    ray_exe = Path(sys.executable).with_name("ray")
    port = _free_port()
    log_path = temp / "start.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [
                str(ray_exe),
                "start",
                "--head",
                "--block",
                "--num-cpus",
                "2",
                "--port",
                str(port),
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                "--temp-dir",
                str(temp),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
            start_new_session=True,
        )
    t0 = time.time()
    while "Ray runtime started" not in log_path.read_text(encoding="utf-8"):
        if proc.poll() is not None or time.time() - t0 > 180:
            return proc, None
        time.sleep(0.5)
    return proc, f"127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group of one `ray start` (only the group this file started)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray head (`--num-cpus 2`, loopback), in its own process group; stopped at the end.

    Up to three tries, each on a fresh port and temp dir; the last try's log is the failure message."""
    logs = []
    for _ in range(3):
        temp = Path(
            tempfile.mkdtemp(prefix="rt", dir="/tmp")
        )  # short: Ray's socket paths have a length limit
        proc, address = _start_head(temp)
        if address is not None:
            try:
                yield address
            finally:
                _stop(proc)
                shutil.rmtree(temp, ignore_errors=True)
            return
        logs.append((temp / "start.log").read_text(encoding="utf-8"))
        _stop(proc)
        shutil.rmtree(temp, ignore_errors=True)
    pytest.fail("ray start --head failed three times; last log:\n" + logs[-1][-4000:])


def _bench(
    manifest: Path,
    out: Path,
    *extra: str,
    methods: str = "demons",
    sets=("demons.iterations=5",),
    background: bool = False,
):
    cmd = [
        sys.executable,
        "-m",
        "regcore.cli",
        "bench",
        "--pairs",
        str(manifest),
        "--methods",
        methods,
        "--out",
        str(out),
        "--quiet",
        *[a for s in sets for a in ("--set", s)],
        *extra,
    ]
    if background:
        return subprocess.Popen(
            cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=420, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def _metrics(report: dict) -> dict:
    return {(r["pair"], r["method"]): tuple(r.get(k) for k in COMPARED) for r in report["pairs"]}


def _wait_for(predicate, timeout: float = 240.0) -> None:
    t0 = time.time()
    while not predicate():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.2)


def test_cluster_via_address_and_embedded_ray_give_the_serial_metrics(ray_cluster, tmp_path):
    import numba
    import torch

    from regcore.bench import run_benchmark

    manifest = make_manifest(tmp_path / "data", n_pairs=2)
    threads = torch.get_num_threads(), numba.get_num_threads()
    try:  # in this process: the serial engine, 1 thread per task like a Ray worker
        serial = run_benchmark(manifest, ["demons"], overrides={"demons": {"iterations": "5"}}, threads=1)
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
    cluster = _bench(manifest, tmp_path / "cluster", "--engine", "ray", "--address", ray_cluster)
    embedded = _bench(manifest, tmp_path / "embedded", "--engine", "ray", "--num-cpus", "2")
    assert cluster["environment"]["engine"] == embedded["environment"]["engine"] == "ray"
    assert all("error" not in r for r in serial["pairs"] + cluster["pairs"] + embedded["pairs"])
    assert len(serial["pairs"]) == 4
    assert _metrics(cluster) == _metrics(serial) == _metrics(embedded)  # identical, not merely close
    hosts = {
        json.loads(p.read_text(encoding="utf-8"))["pid"]
        for p in (tmp_path / "cluster" / "tasks").glob("*.json")
    }
    assert os.getpid() not in hosts


def test_a_worker_killed_mid_task_is_retried(ray_cluster, tmp_path):
    manifest = make_manifest(tmp_path / "data", n_pairs=2)
    out = tmp_path / "out"
    proc = _bench(
        manifest,
        out,
        "--engine",
        "ray",
        "--address",
        ray_cluster,
        methods="slow_demons",
        sets=("slow_demons.iterations=5", "slow_demons.sleep_s=4"),
        background=True,
    )
    try:
        _wait_for(lambda: (out / "tasks.json").is_file())
        slow = [
            t["key"]
            for t in json.loads((out / "tasks.json").read_text(encoding="utf-8"))
            if t["method"] == "slow_demons"
        ]
        victim = {}

        def started():
            for key in slow:
                start = out / "tasks" / f"{key}.start"
                if start.is_file() and not (out / "tasks" / f"{key}.json").is_file():
                    victim.update(
                        key=key, pid=json.loads(start.read_text(encoding="utf-8").splitlines()[0])["pid"]
                    )
                    return True
            return False

        _wait_for(started)
        time.sleep(1.0)  # inside the 4 s pause of the task
        os.kill(victim["pid"], signal.SIGKILL)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    report = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert len(report["pairs"]) == 4 and all("error" not in r for r in report["pairs"]), report["pairs"]
    record = json.loads((out / "tasks" / f"{victim['key']}.json").read_text(encoding="utf-8"))
    assert record["status"] == "ok" and record["attempts"] == 2 and record["pid"] != victim["pid"]


def test_rerun_after_a_killed_driver_skips_finished_tasks(ray_cluster, tmp_path):
    manifest = make_manifest(tmp_path / "data", n_pairs=3)
    out = tmp_path / "out"
    proc = _bench(
        manifest,
        out,
        "--engine",
        "ray",
        "--address",
        ray_cluster,
        methods="slow_demons",
        sets=("slow_demons.iterations=5", "slow_demons.sleep_s=2"),
        background=True,
    )
    try:
        _wait_for(lambda: (out / "tasks.json").is_file())
        slow = {
            t["key"]
            for t in json.loads((out / "tasks.json").read_text(encoding="utf-8"))
            if t["method"] == "slow_demons"
        }
        _wait_for(lambda: any((out / "tasks" / f"{k}.json").is_file() for k in slow))
    finally:
        proc.kill()  # the driver dies mid-run (SIGKILL)
        proc.communicate(timeout=60)
    time.sleep(2.0)
    finished = {p.stem: p.stat().st_mtime_ns for p in (out / "tasks").glob("*.json")}
    assert len(finished) >= 1 and not (out / "results.json").exists()
    report = _bench(
        manifest,
        out,
        "--engine",
        "ray",
        "--address",
        ray_cluster,
        methods="slow_demons",
        sets=("slow_demons.iterations=5", "slow_demons.sleep_s=2"),
    )
    assert len(report["pairs"]) == 6 and all("error" not in r for r in report["pairs"])
    status = json.loads((out / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "finished" and status["skipped"] >= len(finished)
    assert all((out / "tasks" / f"{k}.json").stat().st_mtime_ns == t for k, t in finished.items())


# -- DDP ---------------------------------------------------------------------------------------------
def _losses(run: Path) -> list[float]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["total"] for r in sorted((r for r in recs if r["kind"] == "step"), key=lambda r: r["step"])]


def test_two_process_ddp_matches_one_process_and_resumes(tmp_path):
    from regcore.cli import main
    from regcore.train import run_training

    recipe = {
        "family": "voxelmorph",
        "dims": 2,
        "data": "shapes",
        "train_shape": [32, 32],
        "batch_size": 4,
        "synthetic_pool": 4,
        "epochs": 2,
        "steps_per_epoch": 3,
        "val_pairs": 2,
        "device": "cpu",
        "threads": 1,
        "lr": 0.003,
    }
    (tmp_path / "two_epochs.json").write_text(json.dumps(recipe), encoding="utf-8")
    (tmp_path / "one_epoch.json").write_text(json.dumps({**recipe, "epochs": 1}), encoding="utf-8")
    import torch

    threads = torch.get_num_threads()
    try:
        run_training(tmp_path / "two_epochs.json", tmp_path / "single")  # 1 process, global batch 4
    finally:
        torch.set_num_threads(threads)
    reference = _losses(tmp_path / "single")
    ddp = tmp_path / "ddp"
    assert (
        main(["train", "--config", str(tmp_path / "one_epoch.json"), "--out", str(ddp), "--nproc", "2"]) == 0
    )
    assert len(_losses(ddp)) == 3 and (ddp / "checkpoints" / "last.pt").is_file()
    config = json.loads((ddp / "config.json").read_text(encoding="utf-8"))
    (ddp / "config.json").write_text(
        json.dumps({**config, "epochs": 2}), encoding="utf-8"
    )  # continue for a second epoch
    assert (
        main(["train", "--config", str(ddp / "config.json"), "--out", str(ddp), "--nproc", "2", "--resume"])
        == 0
    )
    losses = _losses(ddp)
    assert len(losses) == 6 and losses[0] != losses[-1]
    assert losses == pytest.approx(reference, rel=1e-4, abs=1e-5)
    status = json.loads((ddp / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "finished" and status["step"] == 6 and (ddp / "model.pt").is_file()
    assert sorted(p.name for p in (ddp / "previews").glob("*.png")) == ["epoch_001.png", "epoch_002.png"]
