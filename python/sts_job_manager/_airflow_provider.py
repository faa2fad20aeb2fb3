"""Airflow provider metadata, found through the ``apache_airflow_provider``
entry point. Kept apart from ``sts_job_manager.airflow`` so Airflow's
provider discovery imports nothing of Airflow's back while it starts."""

from __future__ import annotations

from typing import Any

INTEGRATION = "Storage Transfer Service (sts-job-manager)"


def get_provider_info() -> dict[str, Any]:
    from . import __version__

    modules = "sts_job_manager.airflow"
    return {
        "package-name": "sts-job-manager",
        "name": "sts-job-manager",
        "description": "Migrate Cloud Storage buckets with Storage Transfer Service, "
        "one prefix at a time.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://cloud.google.com/storage-transfer/docs",
                "tags": ["gcp"],
            }
        ],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": [f"{modules}.hooks"]}],
        "operators": [
            {"integration-name": INTEGRATION, "python-modules": [f"{modules}.operators"]}
        ],
        "sensors": [{"integration-name": INTEGRATION, "python-modules": [f"{modules}.sensors"]}],
        "triggers": [{"integration-name": INTEGRATION, "python-modules": [f"{modules}.triggers"]}],
    }
