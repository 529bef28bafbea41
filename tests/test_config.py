"""regcore.config: typed configs the UI and CLI build widgets/flags from."""

import enum
from dataclasses import FrozenInstanceError, dataclass

import pytest

from regcore.config import describe, from_overrides, param, to_dict, validate


class Sim(enum.StrEnum):
    MSE = "mse"
    NCC = "ncc"


@dataclass(frozen=True)
class DemoConfig:
    iterations: int = param(100, "Iterations per level.", range=(1, 1000))
    lr: float = param(0.1, "Step size.", range=(1e-4, 10.0))
    similarity: Sim = param(Sim.NCC, "Similarity metric.")
    levels: tuple[int, ...] = param((4, 2, 1), "Downsampling factors, coarse to fine.")
    symmetric: bool = param(False, "Symmetric updates.", advanced=True)


def test_describe_lists_fields_with_metadata():
    specs = {s.name: s for s in describe(DemoConfig)}
    assert list(specs) == ["iterations", "lr", "similarity", "levels", "symmetric"]
    assert specs["iterations"].range == (1, 1000) and specs["iterations"].type == "int"
    assert specs["similarity"].choices == (Sim.MSE, Sim.NCC)
    assert specs["symmetric"].advanced is True
    js = specs["similarity"].to_json()
    assert js["default"] == "ncc" and js["choices"] == ["mse", "ncc"]


def test_from_overrides_parses_strings_like_the_cli():
    cfg = from_overrides(
        DemoConfig, {"iterations": "50", "similarity": "mse", "levels": "2,1", "symmetric": "true"}
    )
    assert (
        cfg.iterations == 50 and cfg.similarity is Sim.MSE and cfg.levels == (2, 1) and cfg.symmetric is True
    )
    assert to_dict(cfg)["similarity"] == "mse"
    with pytest.raises(FrozenInstanceError):
        cfg.iterations = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"iterations": 0}, r"DemoConfig.iterations must be in \[1, 1000\], got 0"),
        ({"similarity": "foo"}, r"similarity: expected one of \['mse', 'ncc'\], got 'foo'"),
        ({"nope": 1}, r"unknown parameter 'nope'"),
        ({"symmetric": "maybe"}, r"expected true/false"),
        ({"lr": "abc"}, r"DemoConfig.lr"),
    ],
)
def test_bad_overrides_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        from_overrides(DemoConfig, overrides)


def test_validate_rejects_out_of_range_instance():
    with pytest.raises(ValueError, match="lr must be in"):
        validate(DemoConfig(lr=100.0))


def test_param_rejects_mutable_default():
    with pytest.raises(TypeError, match="immutable"):
        param([1, 2], "bad")
