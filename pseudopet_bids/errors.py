"""Exceptions carrying the exit code (BIDS execution spec, DESIGN.md §2) and a user-facing fix."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

#: Exit codes of the command line, documented in README.md.
EXIT_OK = 0
EXIT_PARTICIPANT_FAILED = 1
EXIT_VALIDATION = 16
EXIT_NO_SELECTION = 18
EXIT_USAGE = 64
EXIT_NO_INPUT = 66
EXIT_CANNOT_CREATE = 73
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C), as shells report it


class PseudopetError(Exception):
    """Base class for errors shown to the user without a traceback.

    Parameters
    ----------
    message
        What went wrong.
    path
        The file or folder concerned, named in the message.
    fix
        What the user should do about it.
    """

    exit_code: int = EXIT_PARTICIPANT_FAILED

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path is not None else self.message
        if self.fix:
            text += f" -> {self.fix}"
        return text


class UsageError(PseudopetError):
    """Bad command line or configuration (exit 64)."""

    exit_code = EXIT_USAGE


class ValidationError(PseudopetError):
    """The input dataset is not valid BIDS (exit 16)."""

    exit_code = EXIT_VALIDATION


class NoSelectionError(PseudopetError):
    """The participant/session selection or the filters matched nothing (exit 18)."""

    exit_code = EXIT_NO_SELECTION


class InputError(PseudopetError):
    """A required input is missing, unreadable or unusable (exit 66 at dataset level)."""

    exit_code = EXIT_NO_INPUT


class ImageError(InputError):
    """An image file cannot be used: corrupt, truncated, empty, non-finite, wrong shape."""


class DicomReferenceError(InputError):
    """A ``--dicom-reference`` folder that is not one DICOM series of the participant's T1w
    (no DICOM, several series or patients, another geometry or patient): exit 66, found
    before any output exists."""


class OutputError(PseudopetError):
    """The output or work directory cannot be created or written (exit 73)."""

    exit_code = EXIT_CANNOT_CREATE


class ProcessingError(PseudopetError):
    """A processing step failed for one participant (exit 1 overall)."""

    exit_code = EXIT_PARTICIPANT_FAILED


#: The input of a unit that a :class:`DataError` concerns.
Role = Literal["t1w", "pet"]


class DataError(ProcessingError):
    """A problem in a participant's data found by core code (exit 1 overall).

    The core (``preproc``, ``detect``, ``synthesis``, ``models``) works on arrays and knows no
    file: it says what is wrong, the fix, and which input the problem concerns (``role``); the
    workflow, which knows the files, names the file (:func:`naming_inputs`). Programming
    errors (wrong shapes or arguments passed between functions) stay ``ValueError``.
    """

    def __init__(self, message: str, *, role: Role, fix: str):
        super().__init__(message, None, fix)
        self.role: Role = role

    def naming(self, files: Mapping[str, Path | None]) -> ProcessingError:
        """The same error naming the file of its role (``files``: role -> path)."""
        return ProcessingError(self.message, files.get(self.role), self.fix)


@contextmanager
def naming_inputs(files: Mapping[str, Path | None]) -> Iterator[None]:
    """Re-raise a :class:`DataError` of the block as a :class:`ProcessingError` naming the
    file it concerns (``files``: role -> path, :func:`pseudopet_bids.bids.inputs.input_files`).
    """
    try:
        yield
    except DataError as exc:
        raise exc.naming(files) from exc
