"""Start the dashboard with its engine warm: ``python -m pages._serve [streamlit run options]`` (``make app``).

Streamlit runs app.py only when the first browser arrives, so on a fresh server the first Home would wait
for the engine (torch, numba kernels, regcore: seconds of imports) and the sample registration. This
launcher starts that work on a background thread, then runs ``streamlit run app.py`` in the same process:
Home finds the sample run in the process-wide ``st.cache_resource`` cache (a page that asks while the
thread is still computing waits for it instead of computing it twice). Options after the module name are
passed to ``streamlit run``.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app.py"
LOG = logging.getLogger("reglab.app")


def warm_engine() -> None:
    """Import the engine (torch, its optimisers, regcore, the numba kernels) and register Home's sample pair
    once (cached for every session)."""
    try:
        import torch

        # torch's optimisers import torch._dynamo on first use (~5 s on 2 busy cores): the first affine,
        # dense or learned run of a visitor would pay it.
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        from pages import _state as state

        method = state.default_method(2)
        state.cached_default_run(state.DEFAULT_DATASET, method)
    except Exception:  # noqa: BLE001 - Home computes (or reports) it itself when this fails
        LOG.exception("warming the engine failed; the first Home will do it")


def main(argv: list[str]) -> int:
    from streamlit.web import cli

    threading.Thread(target=warm_engine, name="reglab-warm-engine", daemon=True).start()
    sys.argv = ["streamlit", "run", str(APP), *argv]
    return cli.main(prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
