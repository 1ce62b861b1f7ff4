"""Atomic writes and the no-overwrite policy shared by every writer in ``invdiff.pipelines``.

Rules:

* A file is written to a hidden temporary file in the destination folder (same file system) and moved into place
  with one ``os.replace`` (or ``os.link`` when nothing may be replaced), so readers never see a partial file.
* A folder (a DICOM series) is written into a hidden temporary folder beside the destination and renamed.
* An existing output is replaced only with ``overwrite=True``; otherwise a one-line ``FileExistsError`` names the
  path and the ``--overwrite`` option. An existing *empty* folder counts as free.
* Any exception while writing removes the temporary file or folder and re-raises: no partial output is left.
* Outputs may never be the inputs (``refuse_inputs``): inputs are never modified, even with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "check_writable", "refuse_inputs"]

_TMP_PREFIX = ".invdiff-tmp-"


def _exists_message(path: Path) -> str:
    return f"output {path} already exists; pass --overwrite (overwrite=True) to replace it"


def check_writable(path: str | os.PathLike[str], *, overwrite: bool, folder: bool = False) -> Path:
    """Fail early, before any expensive work, when ``path`` may not be written.

    Args:
        path: the output file or folder.
        overwrite: whether an existing output may be replaced.
        folder: ``True`` when the output is a folder (an existing empty folder is then free).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        FileExistsError: the output exists and ``overwrite`` is false.
        IsADirectoryError: a file output names an existing folder.
        NotADirectoryError: a folder output names an existing file, or its parent is not a folder.
    """
    path = Path(path)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {overwrite!r}")
    parent = path.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"parent folder of output {path} does not exist: {parent}")
    if folder:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"output folder {path} exists and is not a folder")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(_exists_message(path))
    else:
        if path.is_dir():
            raise IsADirectoryError(f"output file {path} is an existing folder")
        if path.exists() and not overwrite:
            raise FileExistsError(_exists_message(path))
    return path


def refuse_inputs(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Raise ``ValueError`` when ``output`` is one of ``inputs`` or a folder containing one.

    Inputs are never modified, whatever ``overwrite`` says.
    """
    out = Path(output).resolve()
    for item in inputs:
        src = Path(item).resolve()
        if src == out or out in src.parents:
            raise ValueError(f"output {output} would replace the input {item}; choose another output path")


def _temp_name(path: Path) -> Path:
    # Hidden, unique, and ending with the real name so format detection by suffix (.nii.gz) still works.
    return path.parent / f"{_TMP_PREFIX}{secrets.token_hex(6)}-{path.name}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Context manager yielding a temporary path to write; on success it becomes ``path`` in one step.

    Examples:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> out.read_text()
        'hello'

    Args:
        path: the final output file.
        overwrite: replace an existing ``path``; otherwise ``FileExistsError`` (checked before and at the move).

    Yields:
        A path in the same folder, not yet existing; the caller creates the file there.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    final = check_writable(path, overwrite=overwrite)
    tmp = _temp_name(final)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"the writer did not create the temporary file {tmp} for output {final}")
        if overwrite:
            os.replace(tmp, final)
        else:
            # os.link refuses to clobber atomically, closing the race between the check and the move.
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise FileExistsError(_exists_message(final)) from None
            except OSError:  # file systems without hard links
                if final.exists():
                    raise FileExistsError(_exists_message(final)) from None
                os.replace(tmp, final)
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False, allowed_suffixes: tuple[str, ...] = ()) -> Iterator[Path]:
    """Context manager yielding an empty temporary folder; on success it is renamed to ``path``.

    Replacing an existing non-empty folder needs ``overwrite=True``; as a guard against deleting unrelated data,
    it is then refused unless every entry in it is a plain file whose name ends with one of ``allowed_suffixes``
    (e.g. ``(".dcm",)`` for a DICOM series). The old folder is moved aside, the new one renamed into place, and
    only then the old one deleted; if the rename fails the old folder is put back.

    Args:
        path: the final output folder.
        overwrite: replace an existing non-empty folder.
        allowed_suffixes: file-name endings an existing folder may contain to be replaceable.

    Yields:
        A new empty folder beside ``path``.

    Raises:
        FileExistsError: ``path`` is a non-empty folder and ``overwrite`` is false.
        ValueError: ``overwrite`` is true but the folder holds something this writer did not produce.
    """
    final = check_writable(path, overwrite=overwrite, folder=True)
    if final.is_dir() and overwrite:
        foreign = [p.name for p in final.iterdir() if not (p.is_file() and p.name.endswith(allowed_suffixes))]
        if foreign:
            raise ValueError(
                f"refusing to replace output folder {final}: it holds entries this writer does not produce "
                f"(e.g. {foreign[0]!r}); choose an empty or new folder"
            )
    tmp = _temp_name(final)
    tmp.mkdir()
    try:
        yield tmp
        if not final.exists():
            os.rename(tmp, final)
        elif not any(final.iterdir()):
            os.rmdir(final)  # an existing empty folder is free; os.rename onto it would also work on POSIX only
            os.rename(tmp, final)
        else:
            if not overwrite:  # it filled up while we were writing
                raise FileExistsError(_exists_message(final))
            old = final.parent / f"{_TMP_PREFIX}old-{secrets.token_hex(6)}-{final.name}"
            os.rename(final, old)
            try:
                os.rename(tmp, final)
            except BaseException:
                os.rename(old, final)
                raise
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            _remove(tmp)
