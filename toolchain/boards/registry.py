"""Decorator registry of target kinds; third-party kinds come from the entry-point group
``codesign.target_kinds``. A duplicate name is an error (labgrid's factory does the same)."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from ..config.target_spec import TargetSpec, load_target_spec
from ..errors import ConfigError, TargetError
from .base import Target

_KINDS: dict[str, type[Target]] = {}
# Built-in kinds are imported lazily: importing them must not pull paramiko/pyserial at startup.
_BUILTIN_MODULES = {
    "local": "toolchain.boards.local",
    "ssh": "toolchain.boards.ssh_target",
    "serial": "toolchain.boards.serial_target",
    "emulated": "toolchain.boards.local",
    "labgrid": "toolchain.boards.labgrid_target",  # needs the extra codesign[farm]
    "fake": "toolchain.boards.fake",
}
ENTRY_POINT_GROUP = "codesign.target_kinds"


def register_kind(name: str):
    def decorate(cls: type[Target]) -> type[Target]:
        existing = _KINDS.get(name)
        if existing is not None and existing is not cls:
            raise ConfigError(f"target kind '{name}' is registered twice ({existing.__qualname__} and {cls.__qualname__})")
        cls.kind = name
        _KINDS[name] = cls
        return cls

    return decorate


def _load_kind(name: str) -> type[Target]:
    if name in _KINDS:
        return _KINDS[name]
    module = _BUILTIN_MODULES.get(name)
    if module:
        import_module(module)
    else:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                ep.load()
                break
    if name not in _KINDS:
        known = sorted(set(_BUILTIN_MODULES) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
        raise TargetError(f"no implementation registered for target kind '{name}'; known kinds: {', '.join(known)}")
    return _KINDS[name]


def open_target(spec_or_name: TargetSpec | str, *, emulate: bool = False) -> Target:
    spec = spec_or_name if isinstance(spec_or_name, TargetSpec) else load_target_spec(spec_or_name)
    return _load_kind(spec.kind)(spec, emulate=emulate)
