"""The store's errors."""

from __future__ import annotations

__all__ = ["StoreError", "StoreSchemaTooNewError"]


class StoreError(Exception):
    """The store cannot be opened or used. Messages never contain the URL's password."""


class StoreSchemaTooNewError(StoreError):
    """The database was migrated by a newer crm-kpi-worker than this one."""
