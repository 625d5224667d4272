"""Errors that stages report as one clear line instead of a traceback."""


class GliomilError(Exception):
    """A problem the user can fix (bad input, bad params). Its message is one line."""


class ParamsError(GliomilError):
    """A value in params.yaml has the wrong type or is out of range."""


class InputError(GliomilError):
    """A subject's files are missing or malformed.

    The message names the subject, the file and what is wrong:
    ``"<subject>: <file>: <problem>"``.
    """

    def __init__(self, subject: str, path, problem: str):
        self.subject = subject
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{subject}: {path}: {problem}")
