"""Airflow names that moved between Airflow 2 and 3, and option checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:  # Airflow 3: the task SDK
    from airflow.sdk import BaseOperator, BaseSensorOperator
except ImportError:  # Airflow 2
    from airflow.models import BaseOperator  # type: ignore[no-redef]
    from airflow.sensors.base import BaseSensorOperator  # type: ignore[no-redef]

try:
    from airflow.sdk.exceptions import AirflowException
except ImportError:
    from airflow.exceptions import AirflowException  # type: ignore[no-redef]

try:
    from airflow.sdk import BaseHook
except ImportError:
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]

try:
    from airflow.sdk.exceptions import AirflowNotFoundException
except ImportError:
    from airflow.exceptions import AirflowNotFoundException  # type: ignore[no-redef]

from airflow.configuration import conf

import sts_job_manager as sjm


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` from the Airflow configuration."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def checked_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of options, validated now unless it still holds Jinja
    templates (those are checked once rendered, when the task runs)."""
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a mapping of option names to values, not {options!r}")
    plain = dict(options)
    if not any(isinstance(v, str) and "{{" in v for v in plain.values()):
        sjm.Options(**plain)
    return plain


__all__ = [
    "AirflowException",
    "AirflowNotFoundException",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "checked_options",
    "default_deferrable",
]
