"""The one error type of the data pipeline."""

from __future__ import annotations


class DataError(ValueError):
    """Bad data or a bad data setting; the message is one line naming the key or file and what
    was expected."""
