"""Strict loading of TOML files into frozen, typed dataclasses.

Unknown keys and wrong types are errors naming the file and the dotted key, because a typo
silently ignored (labgrid's warning-only behaviour) costs a user an afternoon on a board.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

T = TypeVar("T")


def visible(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\u200b``, ``\\t``...): an error
    message must never carry an invisible character the user cannot see or copy."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, escaped and cut to ``limit`` characters, for quoting a value in a message
    (a 10 MB string from a file must not become a 10 MB error line)."""
    text = visible(repr(value))
    if len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict. It must be UTF-8 (TOML's rule); a leading BOM, which Windows
    editors write and tomllib rejects as an 'invalid statement', is dropped."""
    where = visible(str(path))
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{where}: is a folder, not a TOML file") from exc
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{where}, line {line}: bytes {raw[exc.start:exc.end]!r} are not UTF-8; TOML files must be "
            "UTF-8: re-save the file as UTF-8"
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML ({visible(str(exc))}); fix the syntax") from exc


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{source}: key '{where}' has a wrong type")
    if origin is typing.Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{source}: key '{where}' is {shown(value)}; use one of {allowed}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: key '{where}' must be a list, got {type(value).__name__}")
        item_tp = args[0] if args else Any
        return tuple(_convert(v, item_tp, f"{where}[{i}]", source) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{where}' must be a table, got {type(value).__name__}")
        return build(tp, value, source, prefix=f"{where}.")
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: key '{where}' must be a number, got {shown(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: key '{where}' must be an integer, got {shown(value)}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(
                f"{source}: key '{where}' must be a {_type_name(tp)}, got {type(value).__name__} {shown(value)}"
            )
        return value
    raise ConfigError(f"{source}: key '{where}': unsupported type {_type_name(tp)}")


def build(cls: type[T], data: dict[str, Any], source: str, prefix: str = "") -> T:
    """Validate ``data`` into the dataclass ``cls``; unknown keys and wrong types raise ConfigError."""
    source = visible(source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = unknown[0]
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{source}: unknown key '{visible(prefix + key)}'; known keys here: {known}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}", source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{prefix}{name}'")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def to_plain(obj: Any) -> Any:
    """A JSON-able view of a (nested) dataclass, with tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj


def canonical_json(obj: Any) -> str:
    return json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"))


def spec_hash(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
