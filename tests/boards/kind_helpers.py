"""A third-party target kind as a user would ship it: a tiny installed distribution (a package
plus its ``.dist-info`` with an entry point in ``codesign.target_kinds``) written into a folder,
and target files for it and for kinds registered in code."""

from __future__ import annotations

import textwrap
from pathlib import Path

# The package: a Linux board reached through its own shell. The shell is this machine's, but
# every command it runs is logged ($ACME_LOG), so a test can see that deploy and bench went
# through the kind's own open_shell and not through a built-in kind's.
ACME_INIT = '''\
"""acme_boards: codesign target kinds for ACME boards (a test's third-party package)."""

import json
import os

from toolchain.boards.local import LocalTarget
from toolchain.boards.registry import register_kind
from toolchain.bundle.deploy import LocalShell


class AcmeShell(LocalShell):
    def run(self, argv, timeout=None):
        log = os.environ.get("ACME_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(json.dumps([str(a) for a in argv]) + "\\n")
        return super().run(argv, timeout)


@register_kind("acme")
class AcmeBoard(LocalTarget):
    default_passes = 1

    def open_shell(self):
        return AcmeShell(f"acme board {self.spec.name}")
'''

METADATA = "Metadata-Version: 2.1\nName: acme_boards\nVersion: 0.1\nSummary: ACME target kinds\n"
ENTRY_POINTS = "[codesign.target_kinds]\nacme = acme_boards\n"


def write_acme_distribution(root: Path) -> Path:
    """``root/acme_boards/`` and ``root/acme_boards-0.1.dist-info/``, as pip would install them
    into site-packages; returns ``root`` (put it on sys.path / PYTHONPATH)."""
    pkg = root / "acme_boards"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(ACME_INIT)
    info = root / "acme_boards-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(METADATA)
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (info / "top_level.txt").write_text("acme_boards\n")
    (info / "RECORD").write_text("")
    return root


def host_like_target(path: Path, name: str, kind: str) -> Path:
    """A host-like target file of ``kind`` (onnxruntime on this machine's CPU)."""
    path.write_text(textwrap.dedent(f'''\
        name = "{name}"
        kind = "{kind}"
        arch = "x86_64"
        description = "{kind} board for tests"
        threads = 1

        [[runtimes]]
        name = "onnxruntime"
        provider = "CPU"

        [emulation]
        method = "native"
        '''))
    return path
