"""What a manifest.json must look like, checked before anything in a bundle is trusted or copied.

A bundle comes from outside (a CI artefact, a download), so every field deploy, bench and
status read is checked for its type here, and file names for what they may hold: they become
paths on this machine and arguments on the board. Each problem is one BundleError that names
the key, what was found and what is allowed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_MANIFEST_BYTES = 8 << 20  # a real manifest is a few kB; this bounds what is parsed
MAX_FILES = 256
RUNTIMES = ("onnxruntime", "firmware")
# One path segment: no leading dot (no '.', '..', hidden files), no shell or sha256sum-line
# metacharacters, no leading '-' (it would read as an option on the board).
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CRC32 = re.compile(r"[0-9a-f]{8}")
_FIX = "rebuild the bundle with 'codesign bundle'"

_TYPE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "true/false",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def _describe(value: Any) -> str:
    name = "a number" if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    name = name or _TYPE_NAMES.get(type(value), type(value).__name__)
    try:
        shown = repr(value)
    except (ValueError, RecursionError):  # an int of 5000 digits, a list nested 900 deep
        shown = "..."
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{name} ({shown})"


class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, found: Any, allowed: str) -> BundleError:
        return BundleError(
            f"{self.where}: manifest key '{key}' is {_describe(found)}, it must be {allowed}; "
            f"{_FIX}"
        )

    def missing(self, key: str, allowed: str) -> BundleError:
        return BundleError(
            f"{self.where}: manifest key '{key}' is missing (it must be {allowed}); {_FIX}"
        )

    def get(self, obj: dict, key: str, path: str, kinds: tuple, allowed: str, required: bool):
        full = f"{path}.{key}" if path else key
        if key not in obj:
            if required:
                raise self.missing(full, allowed)
            return None
        value = obj[key]
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            raise self.fail(full, value, allowed)
        return value


def check_file_name(name: Any, where: str) -> str:
    """A bundle-relative POSIX path made of safe segments (see ``_SEGMENT``)."""
    if not isinstance(name, str):
        raise BundleError(f"{where}: file name {_describe(name)} is not a string; {_FIX}")
    parts = name.split("/")
    if (
        len(name) > 512
        or len(parts) > 8
        or not all(_SEGMENT.fullmatch(p) for p in parts)
        or name in (MANIFEST, SIGNATURE)
    ):
        raise BundleError(
            f"{where}: file name {name[:80]!r} is not allowed in a bundle (relative path of "
            "segments of [A-Za-z0-9_.+-], none starting with '.' or '-', not the manifest or its "
            f"signature); {_FIX}"
        )
    return name


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_manifest(manifest: Any, where: str) -> dict:
    """Check the types and required keys of a parsed manifest; return it unchanged."""
    c = _Checker(where)
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: the manifest is {_describe(manifest)}, not an object; {_FIX}")
    schema = manifest.get("schema")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise BundleError(
            f"{where} has schema {schema!r}; this codesign reads schema {SCHEMA_VERSION}: rebuild "
            "the bundle with this version of codesign"
        )
    kind = c.get(manifest, "kind", "", (str,), "'codesign-bundle'", True)
    if kind != "codesign-bundle":
        raise c.fail("kind", kind, "'codesign-bundle'")
    for key in ("candidate_id",):
        value = c.get(manifest, key, "", (str,), "a candidate id string", True)
        if not value.strip():
            raise c.fail(key, value, "a non-empty candidate id")
    for key in ("base_candidate_id", "candidate_description", "val_acc_source"):
        c.get(manifest, key, "", (str,), "a string", False)
    for key in ("candidate", "run", "versions"):
        c.get(manifest, key, "", (dict,), "an object", False)
    c.get(manifest, "measured", "", (bool,), "true or false", False)
    c.get(manifest, "dataset", "", (str, dict, type(None)), "a string, an object or null", False)
    for key in ("val_acc", "float_head_val_acc"):
        if key in manifest and manifest[key] is not None and not _number(manifest[key]):
            raise c.fail(key, manifest[key], "a finite number or null")
    labels = c.get(manifest, "label_names", "", (list,), "a list of strings", False)
    if labels is not None and not all(isinstance(x, str) for x in labels):
        raise c.fail("label_names", labels, "a list of strings")
    versions = manifest.get("versions") or {}
    c.get(versions, "codesign", "versions", (str,), "a version string", False)

    target = c.get(manifest, "target", "", (dict,), "an object with a 'name'", True)
    name = c.get(target, "name", "target", (str,), "a target name string", True)
    if not name:
        raise c.fail("target.name", name, "a non-empty target name")
    c.get(target, "hash", "target", (str,), "a string", False)
    c.get(target, "spec", "target", (dict,), "an object", False)

    cost = c.get(manifest, "cost", "", (dict, type(None)), "an object or null", False)
    if cost:
        c.get(cost, "emulated", "cost", (bool,), "true or false", False)
        summary = c.get(cost, "summary", "cost", (dict, type(None)), "an object or null", False)
        if summary and "median_ms" in summary and not _number(summary["median_ms"]):
            raise c.fail("cost.summary.median_ms", summary["median_ms"], "a finite number")

    files = _check_files(c, manifest)
    art = c.get(manifest, "artefact", "", (dict,), "an object", True)
    runtime = c.get(art, "runtime", "artefact", (str,), f"one of {', '.join(RUNTIMES)}", True)
    if runtime not in RUNTIMES:
        raise c.fail("artefact.runtime", runtime, f"one of {', '.join(RUNTIMES)}")
    for key in ("format", "precision"):
        c.get(art, key, "artefact", (str,), "a string", False)
    for key in ("model", "header"):
        ref = c.get(art, key, "artefact", (str,), "a file listed in 'files'", key == "model")
        if ref is not None and ref not in files:
            raise c.fail(f"artefact.{key}", ref, "a file listed in 'files'")
    if runtime == "firmware":
        crc = c.get(art, "model_crc32", "artefact", (str,), "8 lowercase hex digits", False)
        if crc is not None and not _CRC32.fullmatch(crc):
            raise c.fail("artefact.model_crc32", crc, "8 lowercase hex digits")
    check = c.get(manifest, "self_check", "", (dict,), "an object", True)
    c.get(check, "tolerance", "self_check", (dict,), "an object", False)
    n = c.get(check, "n", "self_check", (int,), "a count", False)
    if n is not None and n < 0:
        raise c.fail("self_check.n", n, "a count >= 0")
    if runtime == "firmware":
        crc = c.get(
            check, "firmware_selfcheck_crc32", "self_check", (str,), "8 lowercase hex digits", True
        )
        if not _CRC32.fullmatch(crc):
            raise c.fail("self_check.firmware_selfcheck_crc32", crc, "8 lowercase hex digits")
        ref = c.get(check, "reference", "self_check", (str,), "a file listed in 'files'", False)
        if ref is not None and ref not in files:
            raise c.fail("self_check.reference", ref, "a file listed in 'files'")
    c.get(manifest, "runner", "", (dict, type(None)), "an object or null", False)
    return manifest


def _check_files(c: _Checker, manifest: dict) -> dict:
    files = c.get(manifest, "files", "", (dict,), "an object {file name: sha256}", True)
    if not files:
        raise c.fail("files", files, "a non-empty object {file name: sha256}")
    if len(files) > MAX_FILES:
        raise c.fail("files", f"{len(files)} entries", f"at most {MAX_FILES} entries")
    for name, digest in files.items():
        check_file_name(name, c.where)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise c.fail(f"files.{name}", digest, "a sha256 (64 lowercase hex digits)")
    seen_dirs = {"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)}
    clash = sorted(seen_dirs & set(files))
    if clash:
        raise c.fail(f"files.{clash[0]}", clash[0], "a file name that is not also a folder")
    sizes = c.get(manifest, "sizes", "", (dict,), "an object {file name: bytes}", False)
    if sizes is not None:
        unlisted = sorted(set(sizes) - set(files))
        if unlisted:
            raise c.fail(f"sizes.{unlisted[0]}", sizes[unlisted[0]], "absent: not a listed file")
        unsized = sorted(set(files) - set(sizes))
        if unsized:
            raise c.missing(f"sizes.{unsized[0]}", "the byte count of every listed file")
        for name, size in sizes.items():
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise c.fail(f"sizes.{name}", size, "a byte count >= 0")
    return files


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed in a manifest")


def parse_manifest(data: bytes, where: str) -> dict:
    """Bytes of a manifest.json → the validated manifest (BundleError for anything else)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{where} is over {MAX_MANIFEST_BYTES >> 20} MiB; a manifest is a few kB: {_FIX}"
        )
    try:
        manifest = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
        raise BundleError(f"{where} is not valid JSON ({reason[:120]}); {_FIX}") from exc
    return validate_manifest(manifest, where)
