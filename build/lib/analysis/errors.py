"""Errors the user can act on; the CLI prints them as one line `analysis: error: ...`."""


class AnalysisError(ValueError):
    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status
