"""The in-process transport (``memory://``): broker and result backend for tests and
one-process programs; nothing survives the process."""
