"""The fault-injection suite: see ``docs/internals/faults.md``."""
