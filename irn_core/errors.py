"""Exception types. Every message names the file and/or image id concerned and the problem."""

from __future__ import annotations


class IrnError(Exception):
    """Base class of the errors irn raises on purpose."""


class DatasetError(IrnError, ValueError):
    """A dataset file is missing, unreadable, truncated or inconsistent (names file, image id, problem)."""


class StoreError(IrnError):
    """An HDF5 shard file is missing, truncated, of another schema version, or lacks an image id."""


class InputError(IrnError, ValueError):
    """Arrays given to a core function have wrong shapes, dtypes or non-finite values."""


class ConfigError(IrnError, ValueError):
    """A workflow configuration does not validate against the schema."""


class PlanError(IrnError):
    """The recorded shard plan of a run is unreadable or inconsistent with the run."""


class TrainingError(IrnError):
    """Training cannot go on (e.g. a loss became NaN or infinite)."""
