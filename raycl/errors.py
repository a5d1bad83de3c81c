"""The exceptions: RayclError for a mistake a user can make, DivergedError for a run whose loss
became non-finite."""


class RayclError(Exception):
    """A problem the user can fix: an unknown name, a bad value, missing data.

    The message names the offending item and, where there is a fixed set, the allowed values.
    Command-line entry points print it without a traceback.
    """


def unknown(kind: str, name: object, allowed, where: str = "") -> RayclError:
    """Build the error for a name that is not one of ``allowed``."""
    place = f" in {where}" if where else ""
    listed = ", ".join(str(a) for a in sorted(allowed)) or "(none)"
    return RayclError(f"unknown {kind} {name!r}{place}; allowed: {listed}")


class DivergedError(Exception):
    """The loss became NaN or infinite: the run cannot continue."""

    def __init__(self, task: int, step: int):
        super().__init__(f"loss diverged (non-finite) in task {task + 1} near step {step}")
        self.task = task
        self.step = step
