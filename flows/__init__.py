"""One Prefect flow per scenario of the runbook, plus the restore drill and the manual backup."""
