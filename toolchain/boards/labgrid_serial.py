"""Microcontroller boards in a labgrid farm: what the environment's target provides decides.

A labgrid target with a ``NetworkService`` is a Linux board (codesign's SSH measures on it). One
with a serial port (``SerialPort``, ``RawSerialPort``, or a coordinator's ``NetworkSerialPort``)
and no ``NetworkService`` is a microcontroller: codesign's framed serial link
(``serial_link.py``) opens that port itself, at the resource's speed; labgrid's ``SerialDriver``
is never activated (it would hold the port open, and the framed protocol needs it alone). A
Linux board with a serial console as well as a ``NetworkService`` stays a Linux board.

From there the board is a ``SerialTarget`` built from the target's spec with the port as its
device: the same upload/self-check/commit, rollback, status and bench over the same protocol.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..config.target_spec import TargetSpec
from ..errors import TargetError
from .serial_target import SerialTarget


def board_resources(lg_target) -> tuple[Any | None, Any | None]:
    """(the NetworkService, the serial port resource) of a labgrid target; None for absent."""
    from labgrid.resource import NetworkService, SerialPort

    service = port = None
    for res in getattr(lg_target, "resources", []):
        if service is None and isinstance(res, NetworkService):
            service = res
        elif port is None and isinstance(res, SerialPort):
            port = res
    return service, port


def is_mcu(lg_target) -> bool:
    """A serial port and no NetworkService: a microcontroller board (see the module docstring)."""
    service, port = board_resources(lg_target)
    return service is None and port is not None


def port_url(resource) -> tuple[str, int]:
    """(the device or pyserial URL codesign's link opens, its baud rate) of a serial resource."""
    from labgrid.resource import NetworkSerialPort

    speed = int(resource.speed or 115200)
    if isinstance(resource, NetworkSerialPort):  # exported by a labgrid exporter (ser2net)
        scheme = "rfc2217" if resource.protocol == "rfc2217" else "socket"
        return f"{scheme}://{resource.host}:{resource.port}", speed
    if not resource.port:
        raise TargetError(f"labgrid resource {type(resource).__name__} has no 'port'; give it the "
                          "board's serial device (e.g. /dev/ttyACM0) in the environment")
    return str(resource.port), speed


def serial_target_for(spec: TargetSpec, device: str, baud: int) -> SerialTarget:
    """The ``SerialTarget`` that measures on a farm MCU at ``device``. Its emulation method is
    set to none: a farm board whose port is gone is a failure to report, never silently replaced
    by the pty emulation (``--emulate`` builds an emulated SerialTarget from the spec instead)."""
    try:
        connection = replace(spec.connection, device=device, baud=baud)
        serial_spec = replace(spec, connection=connection,
                              emulation=replace(spec.emulation, method="none"))
    except ValueError as exc:
        raise TargetError(f"target '{spec.name}': its labgrid serial port is not usable: {exc}") from exc
    return SerialTarget(serial_spec)


def no_shell(spec: TargetSpec, where: str) -> TargetError:
    return TargetError(
        f"target '{spec.name}' ({where}) is a microcontroller board (a serial port and no "
        "NetworkService): it has no shell; it runs int8 heads and MCU bundles over its serial port"
    )
