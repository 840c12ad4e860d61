"""Domain errors. Each has a stable machine `code` for the API and a sentence for people."""


class HandleServiceError(Exception):
    code = "invalid"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class HandleExists(HandleServiceError):
    """The suffix is taken, or was taken and deleted: a handle is never reused."""

    code = "handle_exists"
    http_status = 409


class HandleStateError(HandleServiceError):
    """The change does not fit the handle's status (e.g. redirecting a deleted handle)."""

    code = "invalid_state"
    http_status = 409


class PrefixForbidden(HandleServiceError):
    """The caller may not change handles under this prefix (an API token restricted to other prefixes)."""

    code = "prefix_forbidden"
    http_status = 403
