"""The hook: Google credentials from an Airflow connection, handed to the core.

``gcp_conn_id`` names a Google Cloud connection (type
``google_cloud_platform``) and ``impersonation_chain`` the service accounts
to impersonate, as in Airflow's Google provider. With that provider
installed, its ``GoogleBaseHook`` resolves the credentials (every way it
supports) and the core asks it for access tokens; without it, this hook
reads the connection's ``keyfile_dict`` or ``key_path`` itself and the core
signs and impersonates with them, falling back to Application Default
Credentials. Either way keys and tokens go to the Rust core, never to a log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from ._compat import AirflowNotFoundException, BaseHook

DEFAULT_CONN_ID = "google_cloud_default"


def _extra(extras: dict[str, Any], name: str) -> Any:
    # Current extras are unprefixed; old connections prefix them.
    return extras.get(name) or extras.get(f"extra__google_cloud_platform__{name}")


def chain_list(chain: str | Sequence[str] | None) -> list[str] | None:
    """An impersonation chain as a JSON-able list (for triggers), or None."""
    if chain is None:
        return None
    return [chain] if isinstance(chain, str) else list(chain)


def credentials_from_extras(
    extras: dict[str, Any], impersonation_chain: str | Sequence[str] | None
) -> dict[str, Any]:
    """``credentials`` / ``impersonation_chain`` keyword arguments for the
    core from a connection's extras (key material stays inside the dict)."""
    keyfile = _extra(extras, "keyfile_dict")
    key_path = _extra(extras, "key_path")
    credentials: Any = None
    if keyfile:
        credentials = keyfile if isinstance(keyfile, str) else json.dumps(keyfile)
    elif key_path:
        with open(key_path) as file:
            credentials = file.read()
    chain = [impersonation_chain] if isinstance(impersonation_chain, str) else impersonation_chain
    kwargs: dict[str, Any] = {}
    if credentials is not None:
        kwargs["credentials"] = credentials
    if chain:
        kwargs["impersonation_chain"] = list(chain)
    return kwargs


class StsJobManagerHook(BaseHook):
    """Credentials (and the project) for sts_job_manager from a Google
    Cloud connection; ``credentials_kwargs()`` is what ``sjm.Manager``,
    ``sjm.State`` and the tools take."""

    conn_name_attr = "gcp_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "google_cloud_platform"
    hook_name = "Google Cloud (sts-job-manager)"

    def __init__(
        self,
        gcp_conn_id: str = DEFAULT_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain

    def _extras(self) -> dict[str, Any] | None:
        try:
            connection = self.get_connection(self.gcp_conn_id)
        except AirflowNotFoundException:
            if self.gcp_conn_id == DEFAULT_CONN_ID:
                return None  # no connection at all: Application Default Credentials
            raise
        return dict(connection.extra_dejson)

    async def aoptions_and_credentials(
        self, options: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(options(...), credentials_kwargs())`` for triggers: the
        connection is read with the async API, never blocking the loop."""
        try:
            connection = await self.aget_connection(self.gcp_conn_id)
            extras: dict[str, Any] | None = dict(connection.extra_dejson)
        except AirflowNotFoundException:
            if self.gcp_conn_id != DEFAULT_CONN_ID:
                raise
            extras = None
        project = _extra(extras or {}, "project")
        if options.get("project") is None and project:
            options = {**options, "project": str(project)}
        if extras is None:
            return options, credentials_from_extras({}, self.impersonation_chain)
        try:
            import airflow.providers.google  # noqa: F401
        except ImportError:
            return options, credentials_from_extras(extras, self.impersonation_chain)
        return options, await asyncio.to_thread(self.credentials_kwargs)

    def project_id(self) -> str | None:
        """The connection's ``project`` extra, if any."""
        extras = self._extras() or {}
        project = _extra(extras, "project")
        return str(project) if project else None

    def credentials_kwargs(self) -> dict[str, Any]:
        """``credentials=`` (and ``impersonation_chain=``) for the core."""
        extras = self._extras()
        if extras is None:  # no connection: Application Default Credentials
            return credentials_from_extras({}, self.impersonation_chain)
        try:
            from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
        except ImportError:
            return credentials_from_extras(extras, self.impersonation_chain)
        google = GoogleBaseHook(
            gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain
        )
        credentials = google.get_credentials()

        def token() -> str:
            # google-auth refreshes only when the token has expired.
            if not credentials.valid:
                from google.auth.transport.requests import Request

                credentials.refresh(Request())
            return str(credentials.token)

        return {"credentials": token}

    def options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with the connection's project unless one is given."""
        if options.get("project") is None:
            project = self.project_id()
            if project:
                return {**options, "project": project}
        return options


__all__ = ["StsJobManagerHook", "chain_list", "credentials_from_extras"]
