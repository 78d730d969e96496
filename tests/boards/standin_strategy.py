"""A labgrid strategy for the stand-in boards (loaded through the env's ``imports``).

``off``: power off. ``shell``: power on, then wait until the board's NetworkService port accepts
connections, as a real board's sshd comes up after boot. The power switch is an
ExternalPowerDriver whose commands only log (standin_power.py): the stand-in sshd is always up.
"""

from __future__ import annotations

import enum
import socket
import time

import attr
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.strategy import Strategy, StrategyError


class Status(enum.Enum):
    unknown = 0
    off = 1
    shell = 2


@attr.s(eq=False)
class StandInStrategy(Strategy):
    bindings = {"power": "PowerProtocol", "service": "NetworkService"}
    status = attr.ib(default=Status.unknown)
    boot_timeout = attr.ib(default=15.0, validator=attr.validators.instance_of(float))

    @step(args=["status"])
    def transition(self, status, *, step):  # noqa: ARG002 - labgrid's step passes itself
        if not isinstance(status, Status):
            status = Status[status]
        if status == Status.unknown:
            raise StrategyError(f"can not transition to {status}")
        if status == self.status:
            return
        self.target.activate(self.power)
        if status == Status.off:
            self.power.off()
        else:
            self.power.on()
            self._wait_for_service()
        self.status = status

    def _wait_for_service(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.service.address, self.service.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise StrategyError(f"{self.service.address}:{self.service.port} did not come up")


# Every Environment runs its imports again and labgrid refuses a second registration; the
# tests load many environments in one process, so register once.
if "StandInStrategy" not in target_factory.drivers:
    target_factory.reg_driver(StandInStrategy)
