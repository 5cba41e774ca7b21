"""Errors a user can cause. The CLI prints their message on one line and exits with 2."""

__all__ = ["SparqforgeError", "ConfigError", "ToolError", "BundleError", "UnsupportedLayerError",
           "LinkError",
           "DeviceRestarted", "RunInterrupted"]


class SparqforgeError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(SparqforgeError, ValueError):
    """An impossible or malformed configuration."""


class ToolError(SparqforgeError):
    """A required external tool is missing or too old."""


class BundleError(SparqforgeError, ValueError):
    """A model bundle file is malformed, truncated or of an unknown version."""


class UnsupportedLayerError(SparqforgeError, TypeError):
    """A model contains a layer sparqforge cannot export."""


class LinkError(SparqforgeError):
    """The host link to a device failed (timeout, repeated checksum errors)."""


class DeviceRestarted(LinkError):
    """The device restarted (power cycle, reconfiguration, reset) or another host opened it
    since this host did: whatever this host loaded into it is gone."""


class RunInterrupted(DeviceRestarted):
    """A RUNS or in-place RUN got no usable reply: it may have run and overwritten its own
    inputs, so sending it again could compute from its outputs. The batch runs again from
    the host's data, as after a restart."""
