"""Built-in benchmark systems.

Every module of this package that defines a module-level ``SYSTEM`` is registered under
its name and aliases: adding a system is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import ConfigError
from .base import System

__all__ = ["System", "get_system", "list_systems"]

_REGISTRY: dict[str, System] | None = None


def _registry() -> dict[str, System]:
    global _REGISTRY
    if _REGISTRY is None:
        found: dict[str, System] = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if info.name.startswith("_") or info.name == "base":
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            system = getattr(module, "SYSTEM", None)
            if isinstance(system, System):
                found[system.name] = system
        _REGISTRY = found
    return _REGISTRY


def list_systems() -> list[System]:
    """The registered systems, the paper's examples first (by alias), then the others."""
    systems = list(_registry().values())
    return sorted(
        systems,
        key=lambda s: (
            not s.aliases or not s.aliases[0].startswith("ex"),
            s.aliases[0] if s.aliases else s.name,
        ),
    )


def get_system(name: str) -> System:
    """Look a system up by name or alias (case-insensitive), e.g. ``"triad"`` or ``"ex4.3"``."""
    if isinstance(name, System):
        return name
    key = str(name).strip().lower()
    for system in _registry().values():
        if key == system.name.lower() or key in (a.lower() for a in system.aliases):
            return system
    names = ", ".join(s.name for s in list_systems())
    raise ConfigError(f"unknown system '{name}'; available: {names}")
