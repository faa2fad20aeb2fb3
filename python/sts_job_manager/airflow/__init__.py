"""Apache Airflow operators, sensor and trigger for sts-job-manager.

Importable only where Airflow is installed (``pip install
'sts-job-manager[airflow]'``)::

    from sts_job_manager.airflow import StsJobManagerRunOperator, StsMigrationDoneSensor
"""

from __future__ import annotations

try:
    import airflow  # noqa: F401  (only to fail early with a clear message)
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sts_job_manager.airflow needs Apache Airflow: pip install 'sts-job-manager[airflow]'"
    ) from e

from .hooks import StsJobManagerHook
from .operators import (
    StsJobManagerRunOperator,
    StsPauseAllJobsOperator,
    StsPrepareTablesOperator,
    StsRemoveSuccessfulOneTimeJobsOperator,
)
from .sensors import StsMigrationDoneSensor
from .triggers import StsJobManagerRunTrigger, StsMigrationDoneTrigger

__all__ = [
    "StsJobManagerHook",
    "StsJobManagerRunOperator",
    "StsJobManagerRunTrigger",
    "StsMigrationDoneSensor",
    "StsMigrationDoneTrigger",
    "StsPauseAllJobsOperator",
    "StsPrepareTablesOperator",
    "StsRemoveSuccessfulOneTimeJobsOperator",
]
