"""One error hierarchy for the whole service.

Every error the service raises on purpose is a :class:`ForecastError`.  Each
class carries the HTTP status a web worker answers with and a short ``code``
that clients can match on; the message is safe to show to a client (it never
contains a stack trace or a file system path beyond the registry's own names).
"""

from __future__ import annotations


class ForecastError(Exception):
    """Base of every deliberate error; ``status`` is the HTTP status to answer."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RegistryError(ForecastError):
    """Something about the model registry is wrong."""

    status = 500
    code = "registry_error"


class VersionNotFound(RegistryError):
    """The named version or alias does not exist in the registry."""

    status = 404
    code = "version_not_found"


class CorruptVersion(RegistryError):
    """A version's files are missing, unreadable, or fail their checksum."""

    status = 422
    code = "corrupt_version"


class IncompatibleVersion(RegistryError):
    """A version was built with feature code or a LightGBM this build cannot serve."""

    status = 422
    code = "incompatible_version"
