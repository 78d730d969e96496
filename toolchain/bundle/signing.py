"""Bundle signatures: ed25519 over manifest.json, which holds every file's sha256 (the MCU blob's
too), so one signature covers the whole bundle.

Without it, anyone who can change a bundle can re-hash its manifest, and deploy would run the
changed ``runner.py`` (on the host target: on this machine). ``codesign bundle`` signs with
codesign's own key (generated on first use: ``$CODESIGN_HOME/keys/signing.key``, mode 0600) or
the key given with ``--key`` / ``CODESIGN_SIGNING_KEY`` (PEM or OpenSSH ed25519). ``deploy``
and ``bench`` check the signature before anything from the bundle runs, against the trusted
public keys: codesign's own, every file in ``$CODESIGN_HOME/keys/trusted/``, and the files or
folders listed in ``CODESIGN_TRUSTED_KEYS``. A signature that does not match is always refused;
an unsigned bundle, or one signed by a key not trusted here, only with ``--allow-unsigned``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import BundleError, ConfigError
from ..paths import codesign_home
from .schema import MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE

log = logging.getLogger(__name__)
KEY_ENV = "CODESIGN_SIGNING_KEY"
TRUSTED_ENV = "CODESIGN_TRUSTED_KEYS"
MAX_SIGNATURE_BYTES = 64 << 10
MAX_KEY_BYTES = 64 << 10
ALGORITHM = "ed25519"


def keys_dir() -> Path:
    return codesign_home() / "keys"


def own_key_path() -> Path:
    return keys_dir() / "signing.key"


def trusted_dir() -> Path:
    return keys_dir() / "trusted"


def key_id(public: Ed25519PublicKey) -> str:
    """16 hex digits of the sha256 of the raw public key: how messages name a key."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ---- private keys ------------------------------------------------------------------------------
def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{what} {path} is unreadable ({exc.strerror or exc}); {_KEY_FIX}"
        ) from exc
    if len(data) > MAX_KEY_BYTES:
        raise ConfigError(f"{what} {path} is over 64 kB, not a key file; {_KEY_FIX}")
    return data


_KEY_FIX = "pass an ed25519 private key (PEM, or OpenSSH from 'ssh-keygen -t ed25519 -N \"\"')"


def load_private_key(path: Path, what: str = "signing key") -> Ed25519PrivateKey:
    """An unencrypted ed25519 private key from a PEM (PKCS#8) or OpenSSH file."""
    path = Path(path)
    data = _read_key_file(path, what)
    key = None
    for loader in (serialization.load_pem_private_key, serialization.load_ssh_private_key):
        try:
            key = loader(data, password=None)
            break
        except TypeError as exc:  # a password is needed
            raise ConfigError(
                f"{what} {path} is encrypted; codesign signs unattended: use a key without a "
                "passphrase, kept readable by you only (chmod 600)"
            ) from exc
        except (ValueError, UnsupportedAlgorithm):
            continue
    if key is None:
        raise ConfigError(f"{what} {path} is not a PEM or OpenSSH private key; {_KEY_FIX}")
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{what} {path} is a {type(key).__name__.lstrip('_')} key; bundles are signed with "
            f"ed25519: {_KEY_FIX}"
        )
    return key


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    """Create ``path`` (mode 0600) unless another process got there first."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic and refuses to overwrite: the first writer wins
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def own_key() -> Ed25519PrivateKey:
    """codesign's own signing key, generated on first use."""
    path = own_key_path()
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
            _write_private(path, Ed25519PrivateKey.generate())
        except OSError as exc:
            raise ConfigError(
                f"cannot create the signing key {path} ({exc.strerror or exc}); make "
                f"{path.parent} writable or pass --key / {KEY_ENV}"
            ) from exc
        log.info("generated codesign's signing key %s", path)
    key = load_private_key(path, "codesign's signing key")
    pub = path.with_suffix(".pub")
    if not pub.is_file():
        try:
            pub.write_bytes(public_pem(key.public_key()))
        except OSError as exc:  # the .pub is a convenience copy; the key itself is fine
            log.warning("could not write %s: %s", pub, exc)
    return key


def signing_key(path: Path | str | None = None) -> tuple[Ed25519PrivateKey, str]:
    """(key, where it came from): ``path``, else ``$CODESIGN_SIGNING_KEY``, else codesign's own."""
    chosen = path or os.environ.get(KEY_ENV) or None
    if chosen:
        return load_private_key(Path(chosen).expanduser()), str(chosen)
    return own_key(), str(own_key_path())


# ---- signing -----------------------------------------------------------------------------------
def signature_document(manifest_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """manifest.sig's bytes. ed25519 is deterministic, so the same key gives the same bytes and
    the archive stays reproducible."""
    doc = {
        "algorithm": ALGORITHM,
        "signs": MANIFEST,
        "key_id": key_id(key.public_key()),
        "public_key": base64.b64encode(_raw(key.public_key())).decode(),
        "signature": base64.b64encode(key.sign(manifest_bytes)).decode(),
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def sign_folder(folder: Path, key: Ed25519PrivateKey | None = None) -> str:
    """Write ``folder/manifest.sig`` over its manifest; return the key id."""
    key = key or own_key()
    data = (Path(folder) / MANIFEST).read_bytes()
    (Path(folder) / SIGNATURE).write_bytes(signature_document(data, key))
    return key_id(key.public_key())


# ---- checking ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trust:
    """How a bundle's signature was judged: ``trusted``, ``untrusted`` or ``unsigned``."""

    status: str
    key_id: str | None = None
    source: str | None = None  # the trusted key file that matched

    def describe(self) -> str:
        if self.status == "trusted":
            return f"signed by trusted key {self.key_id} ({self.source})"
        if self.status == "untrusted":
            return f"signed by untrusted key {self.key_id}, accepted with --allow-unsigned"
        return "unsigned, accepted with --allow-unsigned"

    def to_dict(self) -> dict:
        return {"status": self.status, "key_id": self.key_id, "source": self.source}


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An ed25519 public key from a PEM or OpenSSH (``ssh-ed25519 AAAA...``) file."""
    data = _read_key_file(path, "trusted key")
    for loader in (serialization.load_pem_public_key, serialization.load_ssh_public_key):
        try:
            key = loader(data)
        except (ValueError, UnsupportedAlgorithm):
            continue
        if isinstance(key, Ed25519PublicKey):
            return key
        break
    raise ConfigError(
        f"trusted key {path} is not an ed25519 public key (PEM or 'ssh-ed25519 ...'); "
        "replace it with a bundle signer's .pub file or remove it"
    )


def _key_files(entry: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
    if entry.is_file():
        return [entry]
    raise ConfigError(f"{TRUSTED_ENV} names {entry}, which does not exist; fix the variable")


def trusted_keys() -> dict[bytes, str]:
    """{raw public key: where it is trusted from}. Reading never creates a key."""
    out: dict[bytes, str] = {}
    own = own_key_path()
    if own.is_file():
        out[_raw(load_private_key(own, "codesign's signing key").public_key())] = (
            f"codesign's own key, {own}"
        )
    sources = [trusted_dir()] if trusted_dir().is_dir() else []
    sources += [
        Path(p).expanduser() for p in os.environ.get(TRUSTED_ENV, "").split(os.pathsep) if p
    ]
    for source in sources:
        for path in _key_files(source):
            out.setdefault(_raw(load_public_key(path)), str(path))
    return out


def _bad(where: str, what: str) -> BundleError:
    return BundleError(
        f"{where}: {what}; the bundle was changed after it was signed (or the signature is "
        "damaged) and is refused, whatever the flags: rebuild it with 'codesign bundle'"
    )


def check_signature(
    manifest_bytes: bytes, sig_bytes: bytes | None, where: str, allow_unsigned: bool = False
) -> Trust:
    """Judge ``manifest.sig`` against the manifest's exact bytes; BundleError unless it is
    good and trusted (or, with ``allow_unsigned``, absent or from an untrusted key)."""
    if sig_bytes is None:
        if not allow_unsigned:
            raise BundleError(
                f"{where} is not signed (no {SIGNATURE}); rebuild it with 'codesign bundle', "
                "which signs it, or pass --allow-unsigned to use it anyway"
            )
        log.warning("%s is not signed; using it because of --allow-unsigned", where)
        return Trust("unsigned")
    if len(sig_bytes) > MAX_SIGNATURE_BYTES:
        raise _bad(where, f"{SIGNATURE} is over 64 kB")
    try:
        doc = json.loads(sig_bytes.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm must be {ALGORITHM!r}")
        raw = base64.b64decode(doc["public_key"], validate=True)
        sig = base64.b64decode(doc["signature"], validate=True)
        public = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
        raise _bad(where, f"{SIGNATURE} is malformed ({str(exc)[:80]})") from exc
    kid = key_id(public)
    try:
        public.verify(sig, manifest_bytes)
    except InvalidSignature as exc:
        raise _bad(where, f"the signature by key {kid} does not match {MANIFEST}") from exc
    source = trusted_keys().get(raw)
    if source is not None:
        return Trust("trusted", kid, source)
    if not allow_unsigned:
        raise BundleError(
            f"{where} is signed by key {kid}, which is not trusted here; if you trust its "
            f"signer, copy their public key into {trusted_dir()}/ (or list it in {TRUSTED_ENV}), "
            "or pass --allow-unsigned"
        )
    log.warning(
        "%s is signed by untrusted key %s; using it because of --allow-unsigned", where, kid
    )
    return Trust("untrusted", kid)


def check_folder(folder: Path, allow_unsigned: bool = False) -> Trust:
    from .manifest import read_capped

    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise BundleError(
            f"{folder} is not a bundle (no {MANIFEST}); build one with 'codesign bundle'"
        )
    sig = folder / SIGNATURE
    if sig.is_symlink() or (sig.exists() and not sig.is_file()):
        raise _bad(str(folder), f"{SIGNATURE} is not a regular file")
    sig_bytes = read_capped(sig, MAX_SIGNATURE_BYTES) if sig.is_file() else None
    return check_signature(
        read_capped(manifest, MAX_MANIFEST_BYTES), sig_bytes, str(folder), allow_unsigned
    )
