"""An arm64 Debian root filesystem run under qemu-user: the stand-in for aarch64 boards.

Emulated wall time says nothing about a real board (TCG is 10-50x slower and its ratio
varies per operator); what emulation *does* prove is that the artefact loads and computes
the same numbers with the aarch64 builds of the runtimes. Latency comes from the analytic
model scaled by the spec's ``latency_scale``.

Two things about qemu-user that shaped this module:

* onnxruntime's cpuinfo library parses ``/proc/cpuinfo`` for ARM fields. Under qemu-user
  it sees the *host's* x86 file (qemu 7.2 only fakes it for a few guest architectures) and,
  together with the host ``/sys`` CPU topology, crashes at session creation. We therefore
  run every emulated program in a private mount namespace (``unshare -m``) with a
  Cortex-A72-shaped cpuinfo bind-mounted over ``/proc/cpuinfo``. Where namespaces are not
  available, we fall back to ``<rootfs>/proc/cpuinfo``: qemu's ``-L`` prefix lookup opens a
  file under the rootfs before the host's one of the same absolute path.
* A deterministic instruction count per inference (``-plugin libinsn.so``) is not offered:
  Debian bookworm ships neither TCG plugins (``libinsn.so`` is built only from QEMU's
  ``contrib/plugins`` source tree) nor ``qemu-plugin.h``, and ``qemu-aarch64-static``
  cannot load plugins at all (static binaries have no ``dlopen``; it answers
  ``unknown option 'plugin'``). Counting would need building QEMU from source.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from ...errors import ConfigError, TargetError
from ...paths import codesign_home

DEFAULT_ROOTFS = "debian-bookworm-arm64"
STAMP = ".codesign-rootfs.json"
# The wheels the agent needs. ai-edge-litert is optional (no aarch64 wheel for every version).
WHEELS = ("numpy", "onnxruntime", "tokenizers")
OPTIONAL_WHEELS = ("ai-edge-litert",)
# pip expands each manylinux tag to every older glibc, so 2_36 (bookworm's glibc) covers
# manylinux2014 (= 2_17) up to 2_36; the older names are listed for pips that do not expand.
PIP_PLATFORMS = (
    "manylinux2014_aarch64",
    "manylinux_2_28_aarch64",
    "manylinux_2_36_aarch64",
)
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
GUEST_PATH = "/usr/local/bin:/usr/bin:/bin"
EMULATION_ENV = "CODESIGN_EMULATED"  # the agent reads it: "qemu-user:<cpu>"

# (CPU part, variant, revision, Features) as a Linux arm64 kernel prints them per core.
_CPUS: dict[str, tuple[str, str, str, str]] = {
    "cortex-a53": ("0xd03", "0x0", "4", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a57": ("0xd07", "0x1", "1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a72": ("0xd08", "0x0", "3", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": (
        "0xd0b",
        "0x4",
        "1",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
        "dcpop asimddp",
    ),
}


def rootfs_cache_dir() -> Path:
    """Where built root filesystems live: ``$CODESIGN_ROOTFS_CACHE`` or ``codesign_home()/rootfs``.

    The override lets CI keep one rootfs across jobs and test sessions, independent of the
    throw-away CODESIGN_HOME each test uses.
    """
    env = os.environ.get("CODESIGN_ROOTFS_CACHE")
    return Path(env).expanduser() if env else codesign_home() / "rootfs"


def find_qemu() -> str:
    """The qemu-user aarch64 binary: the static build first (no host library drift)."""
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        found = shutil.which(name)
        if found:
            return found
    raise TargetError(
        "qemu-aarch64 not found on PATH; install it with 'apt-get install qemu-user-static'"
    )


def cpuinfo_text(cpu: str = "cortex-a72", cores: int = 4) -> str:
    """A /proc/cpuinfo as an arm64 kernel on ``cpu`` prints it (per-core blocks only)."""
    if cpu not in _CPUS:
        raise ConfigError(
            f"emulation cpu '{cpu}' has no cpuinfo template; use one of {sorted(_CPUS)}"
        )
    part, variant, revision, features = _CPUS[cpu]
    blocks = [
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {variant}\n"
        f"CPU part\t: {part}\nCPU revision\t: {revision}\n"
        for i in range(cores)
    ]
    return "\n".join(blocks) + "\n"


def apt_mirror(sources: Sequence[Path] | None = None) -> str:
    """The Debian mirror this machine's own apt uses (so builds go through the same proxy).

    ``$CODESIGN_DEBIAN_MIRROR`` wins. Security and non-Debian repositories are skipped; a host
    without a Debian mirror (e.g. Ubuntu) gets deb.debian.org.
    """
    env = os.environ.get("CODESIGN_DEBIAN_MIRROR")
    if env:
        return env
    if sources is None:
        base = Path("/etc/apt")
        sources = [base / "sources.list", *sorted((base / "sources.list.d").glob("*"))]
    for path in sources:
        if path.suffix not in (".list", ".sources") or not path.is_file():
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for uri, suites in _apt_entries(text, deb822=path.suffix == ".sources"):
            is_debian = any(s in ("bookworm", "trixie", "bullseye", "stable") for s in suites)
            if is_debian and "security" not in uri and uri.startswith(("http://", "https://")):
                return uri.rstrip("/")
    return FALLBACK_MIRROR


def _apt_entries(text: str, deb822: bool) -> list[tuple[str, list[str]]]:
    entries: list[tuple[str, list[str]]] = []
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    entries.append((uri, fields.get("suites", "").split()))
        return entries
    for line in text.splitlines():
        parts = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
        if len(parts) >= 3 and parts[0] == "deb":
            entries.append((parts[1], [parts[2]]))
    return entries


def _parse_rootfs_name(name: str) -> tuple[str, str]:
    match = re.fullmatch(r"debian-([a-z]+)-(arm64)", name)
    if not match:
        raise ConfigError(
            f"rootfs '{name}' is not supported; use 'debian-<suite>-arm64' e.g. '{DEFAULT_ROOTFS}'"
        )
    return match.group(1), match.group(2)


def _run(argv: Sequence[str], what: str, timeout: float, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
        )
    except FileNotFoundError as exc:
        raise TargetError(
            f"{what}: {argv[0]} not found; install it (see .ci/apt-packages-ssh.txt)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise TargetError(
            f"{what}: timed out after {timeout:.0f} s; check the network/mirror"
        ) from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise TargetError(f"{what} failed (exit {proc.returncode}): {tail.strip()}")
    return proc.stdout


def _host_onnxruntime_pin() -> list[str]:
    """Pin onnxruntime to the host's version so emulated outputs compare like with like."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return [f"onnxruntime=={version('onnxruntime')}"]
    except PackageNotFoundError:
        return ["onnxruntime"]


def _pip_install(target: Path, packages: Sequence[str], timeout: float) -> None:
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    argv += ["--no-warn-script-location", "--target", str(target), "--only-binary=:all:"]
    argv += ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for platform in PIP_PLATFORMS:
        argv += ["--platform", platform]
    _run([*argv, *packages], f"pip install of aarch64 wheels {list(packages)}", timeout)


def _extract_debs(root: Path) -> int:
    """Unpack every downloaded .deb; debootstrap's second stage would need the target CPU.

    ``--keep-directory-symlink`` keeps bookworm's merged-/usr links (/bin -> usr/bin) that the
    first stage created; plain ``dpkg-deb -x`` would replace them with real directories.
    """
    debs = sorted((root / "var/cache/apt/archives").glob("*.deb"))
    if not debs:
        raise TargetError(f"debootstrap left no .deb files in {root}/var/cache/apt/archives")
    for deb in debs:
        dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        tar = subprocess.run(
            ["tar", "-x", "--keep-directory-symlink", "--no-same-owner", "-C", str(root)],
            stdin=dpkg.stdout,
            capture_output=True,
            check=False,
        )
        assert dpkg.stdout is not None
        dpkg.stdout.close()
        if dpkg.wait() != 0 or tar.returncode != 0:
            raise TargetError(f"could not unpack {deb.name}: {tar.stderr.decode(errors='replace')}")
    return len(debs)


def _installed_versions(site: Path) -> dict[str, str]:
    versions = {}
    for info in site.glob("*.dist-info"):
        name, _, ver = info.name[: -len(".dist-info")].partition("-")
        versions[name.lower().replace("_", "-")] = ver
    return versions


def prepare_rootfs(
    name: str = DEFAULT_ROOTFS, dest: Path | None = None, *, timeout: float = 1800.0
) -> Path:
    """Build (once) an arm64 Debian rootfs with python3 + the agent's wheels; return its path.

    Cached at ``dest`` or ``rootfs_cache_dir()/name``. The build happens in a temporary sibling
    directory renamed into place only when complete, under a lock, so a crash or a concurrent
    caller never sees half a rootfs. Needs root (debootstrap creates device nodes and owners).
    """
    suite, arch = _parse_rootfs_name(name)
    dest = Path(dest) if dest is not None else rootfs_cache_dir() / name
    if (dest / STAMP).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest.parent / f".{dest.name}.lock"):
        if (dest / STAMP).is_file():  # built by whoever held the lock before us
            return dest
        if dest.exists():
            raise TargetError(
                f"{dest} exists but is not a complete codesign rootfs (no {STAMP}); remove it"
            )
        if os.geteuid() != 0:
            raise TargetError(
                f"building rootfs '{name}' needs root (debootstrap); run 'codesign target "
                "prepare' as root once, or point CODESIGN_ROOTFS_CACHE at a prebuilt one"
            )
        if not shutil.which("debootstrap"):
            raise TargetError(
                "debootstrap not found; install it with 'apt-get install debootstrap'"
            )
        # Holding the lock, any build dir left is from a killed build: reclaim its space.
        for stale in dest.parent.glob(f".{dest.name}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
        try:
            _build(work, suite, arch, timeout)
            os.rename(work, dest)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return dest


def _build(root: Path, suite: str, arch: str, timeout: float) -> None:
    started = time.monotonic()
    mirror = apt_mirror()
    _run(
        [
            "debootstrap",
            "--foreign",
            f"--arch={arch}",
            "--variant=minbase",
            "--include=python3",
            suite,
            str(root),
            mirror,
        ],
        f"debootstrap {suite}/{arch} from {mirror}",
        timeout,
    )
    count = _extract_debs(root)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)  # ~50 MB of .debs
    site = root / SITE_PACKAGES
    _pip_install(site, [*WHEELS[:1], *_host_onnxruntime_pin(), *WHEELS[2:]], timeout)
    optional = {}
    for wheel in OPTIONAL_WHEELS:
        try:
            _pip_install(site, [wheel], timeout)
            optional[wheel] = True
        except TargetError:  # no cp311 aarch64 wheel: tflite jobs will report it clearly
            optional[wheel] = False
    (root / "etc/codesign").mkdir(parents=True, exist_ok=True)
    stamp = {
        "suite": suite,
        "arch": arch,
        "mirror": mirror,
        "debs": count,
        "wheels": _installed_versions(site),
        "optional_wheels": optional,
        "build_s": round(time.monotonic() - started, 1),
    }
    (root / STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl

    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _guest_to_host(rootfs: Path, guest: str) -> Path:
    """Resolve a guest path inside ``rootfs``, re-rooting absolute symlinks (never the host's)."""
    if "/" not in guest:
        guest = f"/usr/bin/{guest}"
    parts = [p for p in guest.split("/") if p not in ("", ".")]
    resolved = rootfs
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved.parent if resolved != rootfs else rootfs
            continue
        candidate = resolved / part
        if not candidate.is_symlink():
            resolved = candidate
            continue
        hops += 1
        if hops > 40:
            raise TargetError(f"too many symlinks resolving {guest} in {rootfs}")
        link = os.readlink(candidate)
        parts = [p for p in link.split("/") if p not in ("", ".")] + parts
        if link.startswith("/"):
            resolved = rootfs
    return resolved


@lru_cache(maxsize=1)
def _can_unshare() -> bool:
    try:
        probe = subprocess.run(
            [*_unshare_prefix(), "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _unshare_prefix() -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    # Non-root callers need a user namespace to be allowed a mount namespace.
    extra = [] if os.geteuid() == 0 else ["--map-root-user"]
    return [unshare, "--mount", "--propagation", "private", *extra, "--"]


def _cpuinfo_file(rootfs: Path, cpu: str) -> Path:
    path = rootfs / "etc/codesign" / f"cpuinfo-{cpu}"
    text = cpuinfo_text(cpu)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


# Runs inside the private mount namespace: the bind mount vanishes with the process.
_BIND_SCRIPT = 'mount --bind "$1" /proc/cpuinfo || exit 125; shift; exec "$@"'


def emulator_command(rootfs: Path, argv: Sequence[str], cpu: str = "cortex-a72") -> list[str]:
    """The host argv that runs guest program ``argv`` (argv[0] a guest path) under qemu-user."""
    if not argv:
        raise ValueError("argv must name a program")
    rootfs = Path(rootfs).resolve()
    exe = _guest_to_host(rootfs, argv[0])
    if not exe.is_file():
        raise TargetError(
            f"{argv[0]} does not exist in rootfs {rootfs}; rebuild it with prepare_rootfs"
        )
    qemu = [find_qemu(), "-L", str(rootfs), "-cpu", cpu, str(exe), *argv[1:]]
    cpuinfo = _cpuinfo_file(rootfs, cpu)
    if _can_unshare():
        return [
            *_unshare_prefix(),
            "/bin/sh",
            "-c",
            _BIND_SCRIPT,
            "codesign-qemu",
            str(cpuinfo),
            *qemu,
        ]
    # No namespaces (unprivileged container): qemu's -L lookup finds <rootfs>/proc/cpuinfo first.
    shutil.copyfile(cpuinfo, rootfs / "proc" / "cpuinfo")
    return qemu


def guest_env(cpu: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment: nothing from the host venv (PYTHONPATH, VIRTUAL_ENV...) leaks in."""
    env = {
        "PATH": GUEST_PATH,
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        EMULATION_ENV: f"qemu-user:{cpu}",
    }
    env.update(extra or {})
    return env


def run_in_rootfs(
    rootfs: Path,
    argv: Sequence[str],
    cpu: str = "cortex-a72",
    timeout: float | None = 600.0,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run an aarch64 program of ``rootfs`` under qemu-user and capture its output.

    Returns the CompletedProcess whatever the exit status; raises TargetError on a timeout.
    """
    command = emulator_command(rootfs, argv, cpu)
    try:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=guest_env(cpu, env),
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TargetError(
            f"emulated {argv[0]} in {rootfs} timed out after {timeout} s; "
            "give it a longer timeout or fewer iterations"
        ) from exc


def write_python_shim(rootfs: Path, dest_dir: Path, cpu: str = "cortex-a72") -> Path:
    """Write ``dest_dir/python3``: a host script running the rootfs's python3 under qemu-user.

    Put ``dest_dir`` first on PATH (e.g. of an sshd session) and ``python3 ...`` behaves as on
    an aarch64 board. The environment is rebuilt from scratch, keeping only HOME.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    command = emulator_command(rootfs, ["/usr/bin/python3"], cpu)
    env = guest_env(cpu)
    env.pop("HOME")
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    script = (
        "#!/bin/sh\n"
        "# Generated by codesign (toolchain.boards.emulation.aarch64.write_python_shim):\n"
        f"# python3 of {rootfs} on an emulated {cpu}.\n"
        f'exec env -i HOME="$HOME" {assignments} {shlex.join(command)} "$@"\n'
    )
    shim = dest_dir / "python3"
    shim.write_text(script)
    shim.chmod(0o755)
    return shim
