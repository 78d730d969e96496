"""The one error tree. Library code raises these; only the CLI turns them into messages.

Every message names the object that is wrong and says how to fix it.
"""

from __future__ import annotations


class CodesignError(Exception):
    """Base of every error codesign raises on purpose."""

    exit_code = 1


class ConfigError(CodesignError):
    """A spec file (target, dataset) or an option is invalid."""

    exit_code = 2


class DatasetError(CodesignError):
    """A dataset cannot be read or is unusable for training."""

    exit_code = 3


class ModelLoadError(CodesignError):
    """A backbone could not be found or loaded."""

    exit_code = 4


class CacheError(CodesignError):
    """The feature cache is corrupt or cannot be written."""


class SearchError(CodesignError):
    """The candidate search cannot proceed (empty space, no feasible candidate...)."""


class RunDirError(CodesignError):
    """A run directory is missing or incomplete."""


class ExportError(CodesignError):
    """A candidate could not be exported."""


class ValidationMismatchError(ExportError):
    """An exported artefact does not reproduce PyTorch within tolerance."""


class QuantizationError(ExportError):
    """No quantization recipe kept accuracy within the allowed drop."""


class TargetError(CodesignError):
    """A target is unknown, unreachable or misbehaved."""


class TargetUnreachableError(TargetError):
    """A target could not be reached (connection refused, timeout, no device)."""


class HostKeyError(TargetError):
    """An SSH host key is unknown or does not match known_hosts."""


class TransportError(TargetError):
    """A serial/SSH transport failed mid-conversation."""


class ProtocolError(TransportError):
    """The device replied something the protocol does not allow."""


class StoreError(CodesignError):
    """The measurement database is unusable."""


class BundleError(CodesignError):
    """A bundle is malformed, tampered with, or unsafe to extract."""


class DeployError(CodesignError):
    """A deployment step failed; the board keeps what it ran before."""


class RegressionError(CodesignError):
    """A benchmark regressed beyond its allowed threshold."""
