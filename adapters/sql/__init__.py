"""SQL databases (PostgreSQL, MariaDB/MySQL): write events into tables."""
