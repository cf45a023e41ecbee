"""Exceptions raised by the SDK.

Every failure of a registry operation is a :class:`DepotError`. When the registry answered with
an error, ``code`` holds its error code (the OCI distribution codes such as ``MANIFEST_UNKNOWN``,
``DENIED``, ``UNAUTHORIZED``, and Depot's own such as ``TAG_CONFLICT``) and ``status`` the HTTP
status, so a program can branch on them without parsing the message.
"""

from __future__ import annotations


class DepotError(Exception):
    """A registry operation failed.

    Attributes:
        message: One line for a person, saying what failed and, where there is one, what to do.
        code: The registry's error code (``"MANIFEST_UNKNOWN"``, ``"DENIED"``, ...), or ``None``
            when the failure happened before the registry answered (a refused connection, a
            missing local file).
        status: The HTTP status of the registry's answer, or ``None``.
    """

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"DepotError({self.message!r}, code={self.code!r}, status={self.status!r})"


class NotFoundError(DepotError):
    """The repository, tag, digest, alias or job does not exist (``*_UNKNOWN``, HTTP 404)."""


class AuthenticationError(DepotError):
    """No credential, or one the registry does not accept (``UNAUTHORIZED``, HTTP 401)."""


class PermissionDeniedError(DepotError):
    """The credential is valid but may not do this (``DENIED``, HTTP 403)."""


class ConflictError(DepotError):
    """A compare-and-swap lost: the alias or tag moved since it was read (HTTP 409/412)."""


class UsageError(DepotError, ValueError):
    """The arguments were refused before anything was sent (a malformed reference, say)."""


def error_for(message: str, code: str | None, status: int | None) -> DepotError:
    """The most specific exception class for a registry answer.

    The HTTP status decides first: a lost compare-and-swap is 412 whatever code the body names.
    """
    if status in (409, 412):
        return ConflictError(message, code, status)
    if status == 404 or (code is not None and code.endswith("_UNKNOWN")):
        return NotFoundError(message, code, status)
    if status == 401 or code == "UNAUTHORIZED":
        return AuthenticationError(message, code, status)
    if status == 403 or code == "DENIED":
        return PermissionDeniedError(message, code, status)
    return DepotError(message, code, status)
