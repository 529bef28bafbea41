"""Start the dashboard with its engine warm: ``python -m pages._serve [streamlit run options]`` (``make app``).

Streamlit runs app.py only when the first browser arrives, so on a fresh server the first Home would wait
for the engine (torch, numba kernels, regcore: seconds of imports) and the sample registration. This
launcher does that work first, then runs ``streamlit run app.py`` in the same process: the server answers
once Home's sample run is in the process-wide ``st.cache_resource`` cache (and torch's optimisers are set
up), and the first visitor's Home is drawn from it. Options after the module name are passed to
``streamlit run``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"
LOG = logging.getLogger("reglab.app")


def warm_engine() -> None:
    """Import the engine (torch, regcore, the numba kernels) and register Home's sample pair once (cached for
    every session)."""
    try:
        from pages import _state as state

        method = state.default_method(2)
        state.cached_default_run(state.DEFAULT_DATASET, method)
    except Exception:  # noqa: BLE001 - Home computes (or reports) it itself when this fails
        LOG.exception("warming the engine failed; the first Home will do it")


def warm_optimisers() -> None:
    """torch's optimisers import torch._dynamo on first use (~5 s on 2 busy cores): pay it now, not in a
    visitor's first affine, dense or learned run."""
    try:
        import torch

        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    except Exception:  # noqa: BLE001 - only a warm-up
        LOG.exception("warming torch's optimisers failed")


def main(argv: list[str]) -> int:
    from streamlit.web import cli

    from regcore.heap import return_large_frees

    return_large_frees()  # a long-lived server: freed volumes go back to the system, not into idle arenas
    print("RegLab: loading the engine and registering the sample pair (a few seconds) ...", flush=True)
    warm_engine()
    warm_optimisers()  # before serving too: a thread importing torch._dynamo slows the first page by seconds
    sys.argv = ["streamlit", "run", str(APP), *argv]
    return cli.main(prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
