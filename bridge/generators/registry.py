"""Generator backends by name. Built-in backends register here; third-party ones through the entry-point group
``worldweave.generators`` (a ``Generator`` subclass, type-checked when loaded)."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from worldweave.bridge.generators.base import Generator
from worldweave.bridge.generators.depth import DepthEstimator
from worldweave.proto.errors import NotFoundError

BUILTIN: dict[str, str] = {
    "reproject": "worldweave.bridge.generators.reproject:ReprojectGenerator",
    "continue": "worldweave.bridge.generators.continuation:ContinuationGenerator",  # planes continued, with texture
    "echo": "worldweave.bridge.generators.echo:EchoGenerator",  # zero cost, for measuring serving overhead
    "wan-vace": "worldweave.bridge.generators.wan_vace:WanVaceGenerator",
    "sd-inpaint": "worldweave.bridge.generators.sd_inpaint:SdInpaintGenerator",
}
"""Name -> ``module:Class``; modules are imported only when their backend is asked for (diffusers is heavy)."""

DEFAULT_GENERATOR = "continue"
"""The backend a world or a server gets when none is named (``WorldConfig.generator``, ``worldweave serve``)."""

DEPTH_ESTIMATORS: dict[str, str] = {
    "depth-anything": "worldweave.bridge.generators.depth_anything:DepthAnythingEstimator",
}
"""Depth estimators by name, for generators that return no depth (``WorldConfig.depth_estimator``)."""

ENTRY_POINT_GROUP = "worldweave.generators"


def _load(target: str) -> type[Generator]:
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Generator)):
        raise TypeError(f"{target} is not a worldweave Generator subclass")
    return cls


def available() -> list[str]:
    """Names of every generator that can be created."""
    names = set(BUILTIN)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def generator_class(name: str) -> type[Generator]:
    """The backend class registered as ``name``; raises ``NotFoundError`` listing what exists."""
    if name in BUILTIN:
        return _load(BUILTIN[name])
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return _load(ep.value)
    raise NotFoundError(f"no generator named {name!r}; available: {', '.join(available())}")


def create_generator(name: str, **options) -> Generator:
    """Instantiate the backend ``name`` with its keyword options."""
    return generator_class(name)(**options)


def create_depth_estimator(name: str, **options) -> DepthEstimator:
    """Instantiate the depth estimator ``name`` with its keyword options."""
    if name not in DEPTH_ESTIMATORS:
        raise NotFoundError(f"no depth estimator named {name!r}; available: {', '.join(sorted(DEPTH_ESTIMATORS))}")
    module_name, _, class_name = DEPTH_ESTIMATORS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, DepthEstimator)):
        raise TypeError(f"{DEPTH_ESTIMATORS[name]} is not a worldweave DepthEstimator subclass")
    return cls(**options)
