"""The master's files: the database, its search index, locks, backups, snapshots, output claims."""
