"""The Redis transport (``redis://``, ``rediss://``, ``unix://``, ``sentinel://``):
broker, result backend, the sync fast path, Celery's key layout and the Lua scripts
(``lua/*.lua``)."""
