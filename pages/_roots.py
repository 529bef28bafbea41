"""Where the web app may read files on the server: the configured data roots.

A visitor picks a data root and a folder inside it; nothing outside the roots is ever read, whatever
they type (``..``, absolute paths and symbolic links that lead out are refused), and every file the
engine opens while loading is checked again (``regcore.io.confine``).

Roots: the environment variable ``REGLAB_DATA_ROOTS`` (folders separated by ``:``; ``;`` on Windows),
default: the built-in sample data and a ``data/`` folder beside ``app.py``. Model weights a visitor
names (a checkpoint path) must lie in a data root, in ``assets/models`` or in the runs folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from regcore.io.confine import confined_to, resolve_under

APP_DIR = Path(__file__).resolve().parents[1]
ROOTS_ENV = "REGLAB_DATA_ROOTS"
HOW_TO_ADD = (
    f"To add a folder, start the app with `{ROOTS_ENV}=/path/one{os.pathsep}/path/two` (it replaces the "
    f"defaults), or put the data in `{APP_DIR / 'data'}`."
)


def _sample_dir() -> Path:
    return Path(os.environ.get("REGLAB_SAMPLE_DIR") or APP_DIR / "sample_data")


def data_roots() -> list[Path]:
    """The configured data roots that exist, resolved (env ``REGLAB_DATA_ROOTS`` or the defaults)."""
    text = os.environ.get(ROOTS_ENV, "").strip()
    candidates = (
        [Path(t).expanduser() for t in text.split(os.pathsep) if t.strip()]
        if text
        else [_sample_dir(), APP_DIR / "data"]
    )
    out: list[Path] = []
    for c in candidates:
        real = Path(os.path.realpath(c))
        if real.is_dir() and real not in out:
            out.append(real)
    return out


def model_roots() -> list[Path]:
    """Folders a checkpoint path may point into: the data roots, ``assets/models`` and the runs folder."""
    from regcore.train.jobs import runs_dir

    out = data_roots() + [
        Path(os.path.realpath(APP_DIR / "assets" / "models")),
        Path(os.path.realpath(runs_dir())),
    ]
    return list(dict.fromkeys(out))


def resolve_folder(root: str | os.PathLike, text: str) -> Path:
    """The folder a visitor asked for: ``text`` relative to ``root``, or an absolute path inside a root.

    ValueError (shown on the page) when it leads outside the roots or is not an existing folder.
    """
    roots = data_roots()
    text = (text or "").strip()
    if text and Path(text).is_absolute():
        real = Path(os.path.realpath(text))
        owner = next((r for r in roots if real == r or r in real.parents), None)
        if owner is None:
            raise ValueError(
                f"{text!r} is outside the data folders this server allows "
                f"({', '.join(str(r) for r in roots) or 'none configured'}). {HOW_TO_ADD}"
            )
        path = resolve_under(owner, os.path.relpath(real, owner))
    else:
        if Path(os.path.realpath(root)) not in roots:
            raise ValueError(f"{root} is not one of the configured data folders")
        path = resolve_under(root, text)
    if not path.is_dir():
        raise ValueError(f"folder not found: {text or str(root)!r}")
    return path


def check_model_path(path: str) -> Path:
    """A checkpoint path a visitor typed, resolved inside :func:`model_roots`; ValueError otherwise."""
    from regcore.methods.learned.inference import resolve_checkpoint

    real = Path(os.path.realpath(resolve_checkpoint(path)))
    roots = model_roots()
    if not any(real == r or r in real.parents for r in roots):
        raise ValueError(
            f"checkpoint {path!r} is outside the folders this server allows for model weights "
            f"({', '.join(str(r) for r in roots)})"
        )
    return real


@contextmanager
def confined() -> Iterator[None]:
    """Inside the block, the engine reads only files inside the data roots (this session's thread only)."""
    roots = data_roots()
    if not roots:
        raise ValueError(f"no data folder is configured on this server. {HOW_TO_ADD}")
    with confined_to(roots):
        yield
