"""Which viewer draws a notebook view (:mod:`regcore.notebook_views`), and why.

The NiiVue widget needs a notebook front-end to draw it (JupyterLab 4, Notebook 7, VS Code); a kernel that
nbmake, nbconvert or papermill runs has none, nor does pytest or CI, and there the plotly fallback draws the
same content. ``REGLAB_VIEWER`` (``auto``, ``niivue``, ``plotly``) overrides the caller's choice.
"""

from __future__ import annotations

import enum
import importlib.util
import os

VIEWER_ENV = "REGLAB_VIEWER"
HEADLESS_MARKERS = ("PYTEST_CURRENT_TEST", "NBMAKE", "CI")
"""Environment variables whose presence means "executed without a front-end" (pytest/nbmake, CI)."""
FRONTEND_MARKERS = ("JPY_SESSION_NAME", "VSCODE_PID", "VSCODE_CWD")
"""Environment variables a kernel inherits from a front-end that can draw widgets."""


class Viewer(enum.StrEnum):
    AUTO = "auto"
    NIIVUE = "niivue"
    PLOTLY = "plotly"


_MODULES = {Viewer.NIIVUE: "ipyniivue"}


def frontend_available() -> tuple[bool, str]:
    """``(True, how)`` when running in a Jupyter kernel that a front-end draws widgets in, else ``(False, why)``.

    A front-end is recognised by the variables its kernels inherit: ``JPY_SESSION_NAME`` (kernels that a
    Jupyter server starts: JupyterLab, Notebook 7) or ``VSCODE_PID``/``VSCODE_CWD`` (VS Code). Kernels that
    nbclient, nbconvert, papermill or nbmake start have neither; :data:`HEADLESS_MARKERS` always win.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False, "IPython is not installed"
    shell = get_ipython()
    if shell is None:
        return False, "not running in IPython/Jupyter"
    if type(shell).__name__ != "ZMQInteractiveShell":
        return False, f"{type(shell).__name__} is not a Jupyter kernel"
    for name in HEADLESS_MARKERS:
        if os.environ.get(name):
            return False, f"executed without a front-end ({name} is set)"
    for name in FRONTEND_MARKERS:
        if os.environ.get(name):
            return True, f"Jupyter front-end ({name} is set)"
    return False, "no notebook front-end detected (a kernel started by nbclient/nbconvert/papermill)"


def choose_viewer(viewer: str | Viewer = Viewer.AUTO) -> tuple[Viewer, str]:
    """The viewer to use and why. ``REGLAB_VIEWER`` overrides ``viewer``.

    ``auto``: NiiVue when ipyniivue is installed and a front-end runs, else plotly. Naming a widget
    library forces it (ValueError with the install command when it is missing).
    """
    requested = os.environ.get(VIEWER_ENV) or viewer
    try:
        choice = Viewer(str(requested).lower())
    except ValueError:
        source = f"${VIEWER_ENV}" if os.environ.get(VIEWER_ENV) else "viewer"
        raise ValueError(f"{source} must be one of {[v.value for v in Viewer]}, got {requested!r}") from None
    if choice == Viewer.PLOTLY:
        return choice, "plotly requested"
    if choice in _MODULES:
        if importlib.util.find_spec(_MODULES[choice]) is None:
            raise ValueError(
                f"viewer {choice.value!r} needs the {_MODULES[choice]} package: "
                f"pip install {_MODULES[choice]} (or the project's 'notebooks' extra)"
            )
        return choice, f"{choice.value} requested"
    ok, why = frontend_available()
    if not ok:
        return Viewer.PLOTLY, why
    if importlib.util.find_spec("ipyniivue") is None:
        return Viewer.PLOTLY, "ipyniivue is not installed (pip install 'reglab[notebooks]')"
    return Viewer.NIIVUE, f"{why}; ipyniivue installed"
