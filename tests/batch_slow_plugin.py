"""A test plug-in method for the batch tests: demons after a pause (``sleep_s``), so a test can kill the
worker process while the task runs. Loaded through ``REGCORE_PLUGINS=batch_slow_plugin`` (tests/ on
PYTHONPATH), which also proves plug-ins reach Ray workers."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from regcore.config import param
from regcore.methods.classical.demons import DemonsConfig, DemonsMethod
from regcore.methods.registry import _REGISTRY, Family, MethodSpec, register_method


@dataclass(frozen=True)
class SlowDemonsConfig(DemonsConfig):
    sleep_s: float = param(2.0, "Pause before registering (seconds).", range=(0.0, 60.0))


class SlowDemons:
    name = "slow_demons"

    def register(self, fixed, moving, config, progress=None):
        time.sleep(config.sleep_s)
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(DemonsConfig)}
        return DemonsMethod().register(fixed, moving, DemonsConfig(**values), progress=progress)


if "slow_demons" not in _REGISTRY:
    register_method(
        MethodSpec(
            name="slow_demons",
            title="Demons after a pause (test)",
            config_cls=SlowDemonsConfig,
            factory=SlowDemons,
            family=Family.DIFFEOMORPHIC,
            dims=(2, 3),
        )
    )
