"""Pieces of the ``celeriac`` command line (``celeriac.cli`` assembles them)."""
