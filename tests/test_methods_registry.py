"""The method registry and the shared method interface (progress, cancel, device)."""

from dataclasses import dataclass

import pytest
import torch

from regcore.config import param
from regcore.methods import registry
from regcore.methods.base import Progress, RegistrationCancelled, Timer, report, resolve_device
from regcore.methods.registry import Family, MethodSpec, MissingExtraError


@dataclass(frozen=True)
class _Cfg:
    steps: int = param(3, "Steps.", range=(1, 10))


def test_every_registered_method_describes_itself():
    specs = registry.all_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    for spec in specs:
        js = spec.to_json()
        assert js["name"] == spec.name and js["family"] in {str(f) for f in Family}
        assert set(js["dims"]) <= {2, 3}
        for p in js["parameters"]:
            assert p["help"], f"{spec.name}.{p['name']} has no help text"
        spec.make_config()  # defaults are valid


def test_unknown_method_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown method 'no-such-method'; known methods: \["):
        registry.get("no-such-method")


def test_duplicate_registration_is_refused():
    spec = MethodSpec("_test_dup", "t", _Cfg, lambda: None, Family.DEFORMABLE)
    registry.register_method(spec)
    try:
        with pytest.raises(ValueError, match="already registered"):
            registry.register_method(MethodSpec("_test_dup", "t", _Cfg, lambda: None, Family.DEFORMABLE))
        assert registry.get("_test_dup").make_config({"steps": "5"}).steps == 5
    finally:
        registry._REGISTRY.pop("_test_dup", None)


def test_report_cancels_when_callback_returns_false():
    seen: list[Progress] = []
    report(lambda p: seen.append(p), 1.7, "clamped", similarity=0.5)
    assert seen[0].fraction == 1.0 and seen[0].losses == {"similarity": 0.5}
    report(None, 0.5)  # no callback: no-op
    with pytest.raises(RegistrationCancelled, match="level 1"):
        report(lambda p: False, 0.2, "level 1")


def test_resolve_device():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            resolve_device("cuda")


def test_timer_measures_wall_time():
    import time

    with Timer(torch.device("cpu")) as t:
        time.sleep(0.05)
    assert 0.04 < t.runtime_s < 1.0 and t.peak_memory_mb >= 0


def test_missing_extra_message_names_install_command(monkeypatch):
    from regcore import extras

    monkeypatch.setattr(extras, "extra_available", lambda name: False)
    with pytest.raises(MissingExtraError, match=r"needs the optional extra 'elastix'.*pip install"):
        extras.require_extra("elastix", "elastix")
