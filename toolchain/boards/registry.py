"""Decorator registry of target kinds; third-party kinds come from the entry-point group
``codesign.target_kinds``. A duplicate name is an error (labgrid's factory does the same).

A third-party distribution declares ``acme = acme_boards`` (a module whose import runs
``@register_kind("acme")``) or ``acme = acme_boards:AcmeBoard`` (the class itself, registered
under the entry point's name if its module did not) in that group; a target file then says
``kind = "acme"``. ``TargetSpec`` checks the name against the same sources (config sits below
the boards, so it holds the built-in names as data: ``BUILTIN_KINDS``)."""

from __future__ import annotations

import re
from importlib import import_module
from importlib.metadata import entry_points

from ..config.target_spec import (
    KIND_ENTRY_POINT_GROUP,
    KIND_NAME,
    TargetSpec,
    declare_kind,
    known_kinds,
    load_target_spec,
)
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
ENTRY_POINT_GROUP = KIND_ENTRY_POINT_GROUP


def register_kind(name: str):
    """Class decorator: ``@register_kind("acme") class AcmeBoard(LinuxBoard): ...``."""
    if not isinstance(name, str) or not re.fullmatch(KIND_NAME, name):
        raise ConfigError(f"target kind name {name!r} is not a kind name; use a lower-case letter, "
                          "then lower-case letters, digits, - or _ (e.g. 'acme-board')")

    def decorate(cls: type[Target]) -> type[Target]:
        if not (isinstance(cls, type) and issubclass(cls, Target)):
            raise ConfigError(f"target kind '{name}': {cls!r} is not a Target subclass; subclass "
                              "toolchain.boards.base.Target (or LinuxBoard, LocalTarget)")
        existing = _KINDS.get(name)
        if existing is not None and existing is not cls:
            raise ConfigError(f"target kind '{name}' is registered twice ({existing.__qualname__} and {cls.__qualname__})")
        cls.kind = name
        _KINDS[name] = cls
        declare_kind(name)  # specs may now name it, as an entry point's kind
        return cls

    return decorate


def _from_entry_point(name: str) -> None:
    """Import the entry point that provides ``name`` (the first one, if several do)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name != name:
            continue
        where = f"entry point '{ep.name} = {ep.value}' ({ENTRY_POINT_GROUP})"
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken third-party package: one line naming it
            raise TargetError(f"target kind '{name}': {where} does not load "
                              f"({type(exc).__name__}: {exc}); fix or reinstall that package") from exc
        if name not in _KINDS and isinstance(loaded, type) and issubclass(loaded, Target):
            register_kind(name)(loaded)  # the entry point names the class itself
        if name not in _KINDS:
            raise TargetError(f"target kind '{name}': {where} loaded but registered no kind "
                              f"'{name}'; decorate its class with @register_kind('{name}') or "
                              "point the entry point at the class (module:Class)")
        return


def kind_class(name: str) -> type[Target]:
    """The class of kind ``name``: registered, built in (imported now), or an entry point's."""
    if name in _KINDS:
        return _KINDS[name]
    module = _BUILTIN_MODULES.get(name)
    if module:
        import_module(module)
    else:
        _from_entry_point(name)
    if name not in _KINDS:
        raise TargetError(f"no implementation registered for target kind '{name}'; known kinds: "
                          f"{', '.join(known_kinds())}")
    return _KINDS[name]


def open_target(spec_or_name: TargetSpec | str, *, emulate: bool = False) -> Target:
    spec = spec_or_name if isinstance(spec_or_name, TargetSpec) else load_target_spec(spec_or_name)
    return kind_class(spec.kind)(spec, emulate=emulate)
