"""The one error type of ``swarm.data``: data that cannot be used, said in one line a user can act on."""

from __future__ import annotations


class DataError(ValueError):
    """Data that cannot be read, packed or served: the message names the file (and line or row) and
    what to change. Callers print it as one line; it is never a bug in Swarm."""
