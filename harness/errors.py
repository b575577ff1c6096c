"""The exceptions metabench raises for bad input; each message names the value, what is allowed, and its source."""

from __future__ import annotations


class MetabenchError(Exception):
    """Base class: an error a user can fix from its message alone."""


class ConfigError(MetabenchError, ValueError):
    """A configuration value is wrong (unknown name, unknown parameter, wrong type, out of range)."""


class DuplicateComponentError(ConfigError):
    """A benchmark names a component that two plugins registered under the same name."""
