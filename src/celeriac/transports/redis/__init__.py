"""The Redis transport (``redis://``, ``rediss://``, ``unix://``, ``sentinel://``):
broker, result backend, the sync fast path, Celery's key layout, the Lua scripts
(``lua/*.lua``) and celeriac's own client on hiredis (``resp`` the sans-I/O codec,
``resp_async`` and ``resp_blocking`` its drivers)."""
