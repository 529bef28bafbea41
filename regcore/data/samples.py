"""Build the built-in sample data into ``sample_data/`` (cached, deterministic, atomic).

``python -m regcore.data.samples [--quiet] [--resolution 1]`` builds the default sets
(``make app`` runs it); :func:`ensure_samples` is what library code calls: it only reads small
manifest files when the cache is current. The folder is ``<repo>/sample_data`` unless the
environment variable ``REGLAB_SAMPLE_DIR`` names another.

A build is split into *units*, one folder each (``brain/3d_2mm``, ``brain/2d_1mm``,
``shapes/2d``, ...). A unit is written to a temporary sibling folder and renamed into place
only when complete, so a killed build never leaves a half cache. Each unit holds::

    manifest.json            format version, geometry, subjects, contrasts, sources, checks
    label_names.csv          value,name (0 = background)
    images/subject_00_t1.nii.gz (and _t2; shapes: subject_00_synth.nii.gz)
    labels/subject_00_seg.nii.gz
    landmarks/subject_00.csv id,x_lps,y_lps[,z_lps] in LPS mm
    transforms/subject_00.npz  SubjectTransform parameters of psi_i (see regcore.data.deform)

Subject i is ``template o psi_i``; the ground truth between two subjects is computed from
the transforms by :func:`regcore.data.pairs.sample_pair`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from regcore.data import subjects as _subjects

FORMAT_VERSION = 1
DATASETS = ("brain", "shapes")
DEFAULT_SUBJECTS = 10
DEFAULT_SEED = 0


@dataclass(frozen=True)
class UnitSpec:
    """One built folder: ``dataset`` ("brain"/"shapes"), ``dims`` (2/3), ``resolution_mm``
    (brain only; shapes use 1 mm voxels)."""

    dataset: str
    dims: int
    resolution_mm: float = 1.0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims!r}")
        if not (isinstance(self.resolution_mm, (int, float)) and 0.5 <= self.resolution_mm <= 8):
            raise ValueError(f"resolution_mm must be a number in [0.5, 8] mm, got {self.resolution_mm!r}")
        if self.dataset == "shapes":
            object.__setattr__(self, "resolution_mm", 1.0)
        object.__setattr__(self, "resolution_mm", float(self.resolution_mm))

    @property
    def name(self) -> str:
        """Relative folder, e.g. ``brain/3d_2mm`` or ``shapes/2d``."""
        if self.dataset == "shapes":
            return f"shapes/{self.dims}d"
        return f"{self.dataset}/{self.dims}d_{self.resolution_mm:g}mm"

    @property
    def seed_key(self) -> int:
        """Stable per-(dataset, dims) key: subject k is the same anatomy at every resolution."""
        return zlib.crc32(f"{self.dataset}/{self.dims}d".encode())


DEFAULT_UNITS = (
    UnitSpec("brain", 2, 1.0),
    UnitSpec("brain", 2, 2.0),
    UnitSpec("brain", 3, 2.0),
    UnitSpec("shapes", 2),
    UnitSpec("shapes", 3),
)


def sample_root(root: str | os.PathLike | None = None) -> Path:
    """The sample-data folder: ``root``, else ``$REGLAB_SAMPLE_DIR``, else ``<repo>/sample_data``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("REGLAB_SAMPLE_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "sample_data"


def read_manifest(unit_dir: str | os.PathLike) -> dict | None:
    """The unit's manifest, or None when missing, unreadable or from another format version."""
    path = Path(unit_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("format_version") == FORMAT_VERSION else None


def _unit_current(unit_dir: Path, subjects: int, seed: int) -> bool:
    m = read_manifest(unit_dir)
    return m is not None and len(m.get("subjects", ())) >= subjects and m.get("seed") == seed


def build_unit(
    spec: UnitSpec,
    root: str | os.PathLike | None = None,
    *,
    subjects: int = DEFAULT_SUBJECTS,
    seed: int = DEFAULT_SEED,
    force: bool = False,
) -> Path:
    """Build one unit atomically into ``root/spec.name``; returns its folder. Skips a current unit."""
    if not isinstance(subjects, int) or subjects < 2:
        raise ValueError(f"subjects must be an int >= 2, got {subjects!r}")
    target = sample_root(root) / spec.name
    if not force and _unit_current(target, subjects, seed):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        t0 = time.perf_counter()
        manifest = _subjects.build_subjects(spec, tmp, subjects=subjects, seed=seed)
        manifest.update(
            format_version=FORMAT_VERSION,
            unit=spec.name,
            seed=seed,
            build_seconds=round(time.perf_counter() - t0, 2),
        )
        manifest["size_bytes"] = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the cache is shared like any other folder
        _replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing target is moved aside first and then deleted.
    If another process renamed its (identical, deterministic) build in meanwhile, ours is dropped."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.rename(new, target)
    except OSError:
        if not target.exists():
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build(
    root: str | os.PathLike | None = None,
    *,
    subjects: int = DEFAULT_SUBJECTS,
    resolution_mm: float | tuple[float, ...] | None = None,
    datasets: tuple[str, ...] = DATASETS,
    dims: tuple[int, ...] = (2, 3),
    seed: int = DEFAULT_SEED,
    force: bool = False,
    quiet: bool = True,
) -> dict[str, dict | None]:
    """Build sample units; returns ``{unit name: manifest}``.

    Args:
        root: output folder (default :func:`sample_root`).
        subjects: subjects per unit (>= 2).
        resolution_mm: brain resolution(s). None = the defaults (3D 2 mm, 2D 1 and 2 mm).
        datasets, dims: which sets to build.
        seed: master seed; same seed -> byte-identical files.
        force: rebuild even when the cache is current.
        quiet: no progress lines on stdout.
    """
    for d in datasets:
        if d not in DATASETS:
            raise ValueError(f"datasets must be a subset of {DATASETS}, got {datasets!r}")
    if resolution_mm is None:
        units = [u for u in DEFAULT_UNITS if u.dataset in datasets and u.dims in dims]
    else:
        res = (resolution_mm,) if isinstance(resolution_mm, (int, float)) else tuple(resolution_mm)
        units = [
            UnitSpec(d, k, r) for d in datasets for k in dims for r in (res if d == "brain" else res[:1])
        ]
    out = {}
    for spec in units:
        t0 = time.perf_counter()
        cached = not force and _unit_current(sample_root(root) / spec.name, subjects, seed)
        folder = build_unit(spec, root, subjects=subjects, seed=seed, force=force)
        out[spec.name] = read_manifest(folder)
        if not quiet:
            what = "cached" if cached else f"built in {time.perf_counter() - t0:.1f} s"
            print(f"sample data {spec.name}: {subjects} subjects in {folder} ({what})", flush=True)
    return out


def ensure_unit(
    dataset: str, dims: int, resolution_mm: float = 2.0, root: str | os.PathLike | None = None
) -> Path:
    """Folder of one unit, built on first use (cheap when cached)."""
    spec = UnitSpec(dataset, dims, resolution_mm)
    target = sample_root(root) / spec.name
    if read_manifest(target) is None:
        build_unit(spec, root, subjects=DEFAULT_SUBJECTS)
    return target


def ensure_samples(root: str | os.PathLike | None = None, *, resolution_mm: float | None = None) -> Path:
    """Make sure the default units (plus brain 3D at ``resolution_mm`` if given) exist; returns the root.

    Cheap when cached: reads one small manifest per unit.
    """
    units = list(DEFAULT_UNITS)
    if resolution_mm is not None:
        units.append(UnitSpec("brain", 3, resolution_mm))
    for spec in units:
        if read_manifest(sample_root(root) / spec.name) is None:
            build_unit(spec, root, subjects=DEFAULT_SUBJECTS)
    return sample_root(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regcore.data.samples", description="Build RegLab's built-in sample data (cached)."
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing when the cache is current")
    parser.add_argument(
        "--resolution",
        type=float,
        action="append",
        help="also build the 3D brain at this resolution in mm (e.g. 1); repeatable",
    )
    parser.add_argument(
        "--subjects", type=int, default=DEFAULT_SUBJECTS, help="subjects per set (default 10)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--out", default=None, help="output folder (default $REGLAB_SAMPLE_DIR or sample_data/)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    kw = dict(subjects=args.subjects, seed=args.seed, force=args.force, quiet=args.quiet)
    built = build(args.out, **kw)
    if args.resolution:
        built.update(
            build(args.out, resolution_mm=tuple(args.resolution), datasets=("brain",), dims=(3,), **kw)
        )
    root = sample_root(args.out)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    if not args.quiet:
        print(
            f"sample data ready in {root}: {len(built)} sets, {size / 2**20:.1f} MiB, "
            f"{time.perf_counter() - t0:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
