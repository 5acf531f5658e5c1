"""The PostgreSQL broker and result backend (psycopg 3, async); see :mod:`.broker`."""
