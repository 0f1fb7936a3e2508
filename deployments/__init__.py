"""Every restorekit flow as a Prefect deployment (see deploy.py)."""
