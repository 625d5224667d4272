"""Errors that stages report as one clear line instead of a traceback."""

import re


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


class OutputError(GliomilError):
    """An output could not be written (a full disk, an unwritable folder): ``"<path>: cannot write (<problem>)"``."""

    def __init__(self, path, problem: OSError | str):
        # A file inside a folder being built (gliomil.runtime.files.atomic_directory) is named where it is going.
        self.path = re.sub(r"\.([^/]+)\.partial-\d+-[0-9a-f]+", r"\1", str(path))
        if isinstance(problem, OSError):
            problem = problem.strerror or str(problem)
        super().__init__(f"{self.path}: cannot write ({problem})")


class Interrupted(BaseException):
    """A stage stopped by SIGINT or SIGTERM (at a safe point: :mod:`gliomil.runtime.interrupts`).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` (a figure that failed to draw) can
    take it for an ordinary error and carry on.
    """

    def __init__(self, signum: int, where: str = "", resume: str = ""):
        self.signum = signum
        self.where = where
        self.resume = resume  # how the work done so far continues, when it was saved
        super().__init__(signum, where, resume)

    def __str__(self) -> str:
        import signal

        name = signal.Signals(self.signum).name
        where = f" {self.where}" if self.where else ""
        if self.resume:
            return f"stopped by {name}{where}; {self.resume}"
        return f"stopped by {name}{where}; nothing of this stage was recorded: `dvc repro` runs it again"
