"""The embedded SQLite transport (``sqlite://``), the default: broker and result backend
in one file, no server. Queries live in ``sql/*.sql``, the schema in ``sql/migrations/``."""
