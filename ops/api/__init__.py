"""The management API under ``/api/v1`` on the ops port: see ``ops.api.app``."""
