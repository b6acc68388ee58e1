"""The model package's errors: one base, a short stable ``code`` each, messages safe to show.

These say what is wrong with a model or the registry, never how to answer it: the web
app (:mod:`app.errors`) and the CLI decide that.  A message never contains a stack trace
or a file system path beyond the registry's own names.
"""

from __future__ import annotations


class ForecastError(Exception):
    """Base of every deliberate error of the model package."""

    code = "forecast_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RegistryError(ForecastError):
    """Something about the model registry is wrong."""

    code = "registry_error"


class VersionNotFound(RegistryError):
    """The named version or alias does not exist in the registry."""

    code = "version_not_found"


class CorruptVersion(RegistryError):
    """A version's files are missing, unreadable, or fail their checksum."""

    code = "corrupt_version"


class IncompatibleVersion(RegistryError):
    """A version was built with feature code or a LightGBM this build cannot serve."""

    code = "incompatible_version"


class ImportRefused(RegistryError):
    """A model from elsewhere (the original service's registry file) cannot be imported: the reason says why."""

    code = "import_refused"
