"""Boards in a labgrid farm: labgrid gets the board ready, codesign's own transport measures.

labgrid (the optional extra ``codesign[farm]``, imported only when such a target is opened)
does what it is built for: it acquires the place (and locks it on a coordinator), powers the
board and brings it to a shell through the environment's strategy. From there codesign's SSH
transport (``ssh.py``) takes over, to the address of the target's ``NetworkService`` resource,
with the target's known_hosts enforced. labgrid's own ``SSHDriver`` runs with
``StrictHostKeyChecking=no``, so it is never activated and no data goes through it.

The spec's ``[labgrid]`` table says where the board is::

    kind = "labgrid"
    [labgrid]
    env = "farm.yaml"          # labgrid environment, relative to the target file
    target = "rpi4-1"          # the target in that environment
    coordinator = ""           # host:port; empty: a local environment, nothing to lock
    place = ""                 # the place to lock (default: the target's name)
    state = "shell"            # the strategy state to reach; "" for none
    power_cycle_on_hang = false

The key and known_hosts come from ``[connection]`` (and its CODESIGN_TARGET_<NAME>_* overrides);
host, port and user come from the ``NetworkService``. A board that does not answer is never
silently replaced by a local emulation (as ``kind = "ssh"`` does): a farm board that labgrid
brought up and that then does not answer is a failure to report. ``--emulate`` still works.

A target whose environment gives a serial port (``SerialPort``, ``RawSerialPort``) and no
``NetworkService`` is a microcontroller board (``labgrid_serial.py``): it measures int8 heads
(``measures == "head"``) and deploys MCU bundles over codesign's framed serial link, which opens
the resource's port at its speed; labgrid's SerialDriver is never activated. The resources
decide, read from the environment on first use; the spec's [mcu] and [budgets] tables apply.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config.target_spec import Emulation, TargetSpec
from ..errors import TargetError, TransportError
from .base import Reachability
from .labgrid_serial import board_resources, is_mcu, no_shell, port_url, serial_target_for
from .linux import LinuxBoard
from .registry import register_kind
from .serial_target import SerialTarget
from .ssh_target import SshTarget

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'codesign[farm]'"
# labgrid's environments and strategies are not made for threads: every labgrid call (load,
# lock, power, strategy) holds this lock. The measuring over SSH, the long part, does not, so
# boards are still measured in parallel.
_LABGRID_LOCK = threading.RLock()
_ENVIRONMENTS: dict[tuple[str, str], Any] = {}  # (env file, coordinator) -> labgrid Environment


def import_labgrid():
    """The labgrid package, or a one-line TargetError saying how to install it."""
    try:
        import labgrid
        import labgrid.resource  # noqa: F401 - registers NetworkService & co with the factory
    except ImportError as exc:
        raise TargetError(
            f"target kind 'labgrid' needs the labgrid package ({exc.name or exc}); install it "
            f"with {INSTALL_HINT}"
        ) from exc
    return labgrid


def _labgrid_failure(what: str, exc: BaseException) -> TargetError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if exc.__cause__ is not None and str(exc.__cause__):  # StrategyError hides the real cause
        text += f" ({' '.join(str(exc.__cause__).split())})"
    return TargetError(f"{what}: {type(exc).__name__}: {text[:600]}")


def environment(env_file: str, coordinator: str = ""):
    """One labgrid Environment per environment file (and coordinator) in this process."""
    labgrid = import_labgrid()
    path = Path(env_file)
    if not path.is_file():
        raise TargetError(
            f"labgrid environment '{env_file}' (key 'labgrid.env') does not exist; give the "
            "path of a labgrid environment YAML, relative to the target file"
        )
    key = (str(path.resolve()), coordinator)
    with _LABGRID_LOCK:
        if key not in _ENVIRONMENTS:
            try:
                env = labgrid.Environment(config_file=key[0])
                if coordinator:  # for RemotePlace resources, as labgrid's pytest plugin does
                    env.config.set_option("coordinator_address", coordinator)
            except Exception as exc:  # labgrid raises YAML, config and import errors alike
                raise _labgrid_failure(f"labgrid environment {env_file} could not be loaded",
                                       exc) from exc
            _ENVIRONMENTS[key] = env
        return _ENVIRONMENTS[key]


def _strategy(target):
    """The env's strategy for ``target``, or None when it defines none."""
    from labgrid.target import NoStrategyFoundError

    try:
        return target.get_strategy()
    except NoStrategyFoundError:
        return None


def _labgrid_client() -> str:
    beside = Path(sys.executable).with_name("labgrid-client")
    found = str(beside) if beside.is_file() else shutil.which("labgrid-client")
    if not found:
        raise TargetError(f"labgrid-client not found (needed to lock a place); {INSTALL_HINT}")
    return found


@register_kind("labgrid")
class LabgridTarget(LinuxBoard):
    """A board reached through a labgrid environment; see the module docstring.

    The place is acquired on first use (``prepare``, ``run_agent``, ``run_head``) and held until
    ``close`` (or the end of a ``with`` block, or the process)."""

    def __init__(
        self, spec: TargetSpec, *, emulate: bool = False, trust_on_first_use: bool | None = None
    ) -> None:
        super().__init__(spec, emulate=emulate)
        import_labgrid()  # fail at open, in one line, when the extra is not installed
        self.trust_on_first_use = trust_on_first_use
        self._lg_target = None  # the labgrid Target, once acquired
        self._locked_place = ""
        self._board: SshTarget | SerialTarget | None = None  # what measures, once acquired
        self._mcu: bool | None = None  # whether the env's target is a microcontroller board
        self._lock = threading.Lock()

    # ---- what kind of board: decided by the env target's resources, read once -----------
    def is_mcu(self) -> bool:
        """Whether the env's target gives a serial port and no NetworkService."""
        if self._mcu is None:
            try:
                target = self._labgrid_target()
            except TargetError:
                if not self.emulate:
                    raise
                # --emulate needs no farm: without a readable env the spec's [mcu] table decides.
                self._mcu = bool(self.spec.mcu.core or self.spec.mcu.flash_kb)
                return self._mcu
            with _LABGRID_LOCK:
                self._mcu = is_mcu(target)
        return self._mcu

    @property
    def measures(self) -> str:  # type: ignore[override]
        return "head" if self.is_mcu() else "artefact"

    @property
    def bundle_runtime(self) -> str:  # type: ignore[override]
        return SerialTarget.bundle_runtime if self.is_mcu() else LinuxBoard.bundle_runtime

    @property
    def bench_iterations(self) -> int:  # type: ignore[override]
        return SerialTarget.bench_iterations if self.is_mcu() else 60

    # ---- labgrid side -------------------------------------------------------------------
    @property
    def _where(self) -> str:
        cfg = self.spec.labgrid
        return f"labgrid target '{cfg.target}' of {cfg.env}"

    def _labgrid_target(self):
        cfg = self.spec.labgrid
        env = environment(cfg.env, cfg.coordinator)
        with _LABGRID_LOCK:
            try:
                target = env.get_target(cfg.target)
            except Exception as exc:
                raise _labgrid_failure(f"{self._where} could not be created", exc) from exc
        if target is None:
            known = ", ".join(sorted(env.config.get_targets())) or "(none)"
            raise TargetError(
                f"labgrid environment {cfg.env} has no target '{cfg.target}' (key "
                f"'labgrid.target'); its targets: {known}"
            )
        return target

    def _network_service(self, target) -> tuple[str, int, str]:
        from labgrid.resource import NetworkService

        with _LABGRID_LOCK:
            try:
                service = target.get_resource(NetworkService, wait_avail=False)
                target.await_resources([service], timeout=self.spec.connection.connect_timeout_s)
            except Exception as exc:
                raise _labgrid_failure(
                    f"{self._where} gives no usable NetworkService (address, username, port; "
                    "codesign measures over SSH to it)", exc) from exc
        return service.address, int(service.port), service.username

    def _power(self, target):
        from labgrid.protocol import PowerProtocol

        try:
            return target.get_driver(PowerProtocol)
        except Exception:  # NoDriverFoundError: a board without switchable power
            return None

    def _bring_up(self, target) -> None:
        """Through the strategy to ``state`` when the env has one; else power on, if it can."""
        state = self.spec.labgrid.state
        with _LABGRID_LOCK:
            try:
                strategy = _strategy(target)
                if strategy is not None and state:
                    log.info("%s: strategy %s -> %s", self._where, type(strategy).__name__, state)
                    strategy.transition(state)
                    return
                power = self._power(target)
                if power is not None:
                    log.info("%s: power on", self._where)
                    power.on()
            except Exception as exc:
                raise _labgrid_failure(f"{self._where} could not be brought to "
                                       f"'{state or 'power on'}'", exc) from exc

    def _power_cycle(self, target) -> bool:
        """Power-cycle a hung board back to ``state``; False when it has no way to."""
        state = self.spec.labgrid.state
        with _LABGRID_LOCK:
            try:
                strategy = _strategy(target)
                if strategy is not None and state:
                    strategy.transition("off")
                    strategy.transition(state)
                    return True
                power = self._power(target)
                if power is None:
                    return False
                power.cycle()
                return True
            except Exception as exc:
                raise _labgrid_failure(f"{self._where} could not be power-cycled", exc) from exc

    def _run_client(self, verb: str) -> subprocess.CompletedProcess[str]:
        cfg = self.spec.labgrid
        argv = [_labgrid_client(), "-x", cfg.coordinator, "-p", self._place, verb]
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False,
                                  timeout=self.spec.connection.connect_timeout_s + 30,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"'labgrid-client -p {self._place} {verb}' on coordinator "
                              f"{cfg.coordinator} did not answer; check the coordinator") from exc

    @property
    def _place(self) -> str:
        return self.spec.labgrid.place or self.spec.labgrid.target

    def _lock_place(self) -> None:
        proc = self._run_client("acquire")
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no message").splitlines()[-1]
            raise TargetError(
                f"labgrid place '{self._place}' could not be locked on {self.spec.labgrid.coordinator}: "
                f"{last}; see who holds it with 'labgrid-client -p {self._place} who'"
            )
        self._locked_place = self._place
        atexit.register(self.close)  # a lock left on the coordinator blocks the farm's others

    def _ssh_spec(self, address: str, port: int, user: str) -> TargetSpec:
        conn = self.spec.connection
        if conn.host and conn.host != address:
            log.warning("%s: [connection] host %s is ignored; the NetworkService says %s",
                        self.spec.name, conn.host, address)
        try:
            connection = replace(conn, host=address, port=port, user=user or conn.user)
            # No silent fallback to a local emulation for a farm board (see the docstring).
            return replace(self.spec, connection=connection, emulation=Emulation())
        except ValueError as exc:
            raise TargetError(f"{self._where}: its NetworkService is not usable: {exc}") from exc

    def _serial_port(self, target) -> tuple[str, int]:
        with _LABGRID_LOCK:
            port = board_resources(target)[1]
            try:
                target.await_resources([port], timeout=self.spec.connection.connect_timeout_s)
            except Exception as exc:
                raise _labgrid_failure(f"{self._where}: its serial port is not available", exc) from exc
        return port_url(port)

    def acquire(self) -> SshTarget | SerialTarget:
        """Lock (with a coordinator), power and bring up the board; the target that measures on
        it: an SshTarget, or a SerialTarget on the port of a microcontroller board."""
        with self._lock:
            if self._board is not None:
                return self._board
            try:
                if self.spec.labgrid.coordinator:
                    self._lock_place()
                target = self._labgrid_target()
                self._lg_target = target
                self._bring_up(target)
                if self.is_mcu():
                    self._board = serial_target_for(self.spec, *self._serial_port(target))
                else:
                    address, port, user = self._network_service(target)
                    self._board = SshTarget(self._ssh_spec(address, port, user),
                                            trust_on_first_use=self.trust_on_first_use)
            except BaseException:
                self._release()
                raise
            return self._board

    def _release(self) -> None:
        target, self._lg_target, self._board = self._lg_target, None, None
        if target is not None:
            with _LABGRID_LOCK:
                try:
                    target.deactivate_all_drivers()
                except Exception as exc:  # releasing must not hide what went wrong before
                    log.warning("%s: deactivating labgrid drivers failed: %s", self._where, exc)
        if self._locked_place:
            proc = self._run_client("release")
            if proc.returncode != 0:
                log.warning("labgrid place '%s' was not released: %s", self._locked_place,
                            proc.stderr.strip()[-300:])
            self._locked_place = ""
            atexit.unregister(self.close)

    def close(self) -> None:
        """Release the labgrid target (and unlock its place); idempotent."""
        with self._lock:
            self._release()

    def __enter__(self) -> LabgridTarget:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- Target verbs -------------------------------------------------------------------
    def _emulated(self) -> SshTarget | SerialTarget:
        if self.is_mcu():  # the spec's [emulation] (method "pty" or "qemu-system") runs it
            return SerialTarget(self.spec, emulate=True)
        return SshTarget(self.spec, emulate=True, trust_on_first_use=self.trust_on_first_use)

    def _mcu_board(self) -> SerialTarget:
        """The SerialTarget of a microcontroller board (emulated with ``--emulate``)."""
        return self._emulated() if self.emulate else self.acquire()

    def reachability(self) -> Reachability:
        """Whether the board answers (SSH, or a serial handshake) now. Locks nothing and powers
        nothing."""
        try:
            mcu = self.is_mcu()
        except TargetError as exc:
            return Reachability(False, str(exc))
        if self.emulate:
            return self._emulated().reachability()
        if mcu:
            try:
                board = serial_target_for(self.spec, *self._serial_port(self._labgrid_target()))
            except TargetError as exc:
                return Reachability(False, str(exc))
            answer = board.reachability()
            return Reachability(answer.reachable, f"{self._where}: {answer.detail}")
        try:
            address, port, user = self._network_service(self._labgrid_target())
            ssh = SshTarget(self._ssh_spec(address, port, user),
                            trust_on_first_use=self.trust_on_first_use)
        except TargetError as exc:
            return Reachability(False, str(exc))
        answer = ssh.reachability()
        return Reachability(answer.reachable, f"{self._where}: {answer.detail}")

    def open_shell(self):
        """The acquired board's SSH shell (codesign's transport, known_hosts enforced)."""
        if self.is_mcu():
            raise no_shell(self.spec, self._where)
        if self.emulate:
            return self._emulated().open_shell()
        return self.acquire().open_shell()

    def prepare(self) -> None:
        if self.emulate:
            self._emulated().prepare()
        else:
            self.acquire()

    def run_agent(
        self, job_dir: Path, *, warmup: int, iterations: int, threads: int
    ) -> dict[str, Any]:
        """Run the agent on the board over SSH. With ``power_cycle_on_hang`` a run that hangs or
        drops the link power-cycles the board and runs once more (a measurement has no effects
        on the board beyond its temporary folder); otherwise the TransportError goes up and no
        record is written."""
        if self.emulate or self.is_mcu():  # an MCU's SerialTarget says it runs heads instead
            board = self._emulated() if self.emulate else SerialTarget(self.spec)
            return board.run_agent(job_dir, warmup=warmup, iterations=iterations, threads=threads)
        ssh = self.acquire()
        try:
            return ssh.run_agent(job_dir, warmup=warmup, iterations=iterations, threads=threads)
        except TransportError as exc:
            if not self.spec.labgrid.power_cycle_on_hang or self._lg_target is None:
                raise
            log.warning("%s: %s; power-cycling it and measuring once more", self._where, exc)
            if not self._power_cycle(self._lg_target):
                raise TransportError(f"{exc}; power_cycle_on_hang is set but {self._where} has "
                                     "no power driver or strategy to cycle it with") from exc
        return ssh.run_agent(job_dir, warmup=warmup, iterations=iterations, threads=threads)

    # A microcontroller board's verbs are its SerialTarget's; a Linux board's go over its shell.
    def run_head(self, head: Any, inputs: Any, **options):
        if not self.is_mcu():
            raise self._unsupported("run an int8 head (its env target has a NetworkService: a "
                                    "Linux board)")
        return self._mcu_board().run_head(head, inputs, **options)

    def deploy(self, bundle_path: Path, *, shell=None, link=None, allow_unsigned: bool = False):
        if self.is_mcu():
            return self._mcu_board().deploy(bundle_path, link=link, allow_unsigned=allow_unsigned)
        return super().deploy(bundle_path, shell=shell, allow_unsigned=allow_unsigned)

    def rollback(self, *, shell=None, link=None):
        if self.is_mcu():
            return self._mcu_board().rollback(link=link)
        return super().rollback(shell=shell)

    def status(self, *, shell=None, link=None):
        if self.is_mcu():
            return self._mcu_board().status(link=link)
        return super().status(shell=shell)

    def bench(self, folder: Path, manifest: dict, *, iterations: int, warmup: int = 0,
              blocks: int = 1, slowdown: float = 0.0, shell=None) -> dict[str, Any]:
        if self.is_mcu():
            return self._mcu_board().bench(folder, manifest, iterations=iterations,
                                           warmup=warmup, blocks=blocks, slowdown=slowdown)
        return super().bench(folder, manifest, iterations=iterations, warmup=warmup,
                             blocks=blocks, slowdown=slowdown, shell=shell)


def clear_environments() -> None:
    """Forget the loaded environments (tests load many; a process normally loads one)."""
    with _LABGRID_LOCK:
        for env in _ENVIRONMENTS.values():
            try:
                env.cleanup()
            except Exception as exc:
                log.warning("labgrid environment cleanup failed: %s", exc)
        _ENVIRONMENTS.clear()


