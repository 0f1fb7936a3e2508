"""Backup engines for the self-hosted provider: ``native`` (pg_basebackup + archive_command into
a restorekit repository) and ``pgbackrest``."""
