"""CliError and the exit codes every command ends with."""

from __future__ import annotations

OK, FAILING, USAGE, UNKNOWN = 0, 1, 2, 3
EXIT_OF_STATUS = {"healthy": OK, "degraded": OK, "failing": FAILING, "unknown": UNKNOWN}


class CliError(Exception):
    """Ends the command with one line on stderr and an exit code."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


def exit_of_http(status: int) -> int:
    if status == 422:
        return FAILING
    if status in (429,) or status >= 500:
        return UNKNOWN
    return USAGE
