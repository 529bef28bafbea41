"""pages/_serve.py: `make app` starts Streamlit with the sample run already registered in the shared cache."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")


def test_warming_fills_the_cache_home_reads(monkeypatch):
    from pages import _backend as backend
    from pages import _serve as serve
    from pages import _state as state

    calls = []
    real = backend.run_registration
    monkeypatch.setattr(backend, "run_registration", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    state.cached_default_run.clear()
    serve.warm_engine()
    assert len(calls) == 1, "the sample pair is registered while the server starts"
    record = state.cached_default_run(state.DEFAULT_DATASET, state.default_method(2))
    assert len(calls) == 1, "Home then finds it in the cache"
    assert record.metrics["dice_mean"] > record.before_metrics["dice_mean"]


def test_main_warms_then_runs_streamlit_on_app_py_with_the_given_options(monkeypatch):
    import sys

    from streamlit.web import cli

    from pages import _serve as serve

    order = []
    monkeypatch.setattr(cli, "main", lambda prog_name: order.append(("streamlit", list(sys.argv))) or 0)
    monkeypatch.setattr(serve, "warm_engine", lambda: order.append(("engine", None)))
    monkeypatch.setattr(serve, "warm_optimisers", lambda: order.append(("optimisers", None)))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert serve.main(["--server.port", "8599"]) == 0
    names = [name for name, _ in order]
    assert names == ["engine", "optimisers", "streamlit"], "all warm before the server answers anyone"
    argv = dict(order)["streamlit"]
    assert (
        argv[:2] == ["streamlit", "run"]
        and argv[2].endswith("app.py")
        and argv[3:] == ["--server.port", "8599"]
    )


def test_a_failing_warm_up_is_logged_not_raised(monkeypatch, caplog):
    from pages import _serve as serve
    from pages import _state as state

    monkeypatch.setattr(
        state, "default_method", lambda dims: (_ for _ in ()).throw(RuntimeError("no engine"))
    )
    serve.warm_engine()
    assert "warming the engine failed" in caplog.text
    serve.warm_optimisers()  # cheap once torch is imported; never raises
