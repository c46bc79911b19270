"""The one error shape for input that cannot be judged as given.

Every validation error of the service derives from :class:`InvalidInput`; its
message is the reason a person reads: the dead-letter reason in the worker, the
per-request error of the Triton model, the exception the client raises
(:class:`guard.protocol.RequestRejected`), a rejected dataset row.
"""

from __future__ import annotations


class InvalidInput(ValueError):
    """Input that cannot be judged as given; the message says why (never retried)."""
