"""Where a search keeps its experiment: a local folder, or a URI pyarrow opens (``s3://bucket/prefix``,
``gs://...``), the same filesystems Ray Tune writes its storage path with.

S3 takes its endpoint and credentials the standard way (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), so an S3-compatible server works as well as AWS.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from raycl.files import atomic_write_bytes


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def resolve(location: str | os.PathLike) -> str:
    """A local path made absolute, or the URI without a trailing slash."""
    if is_uri(location):
        return str(location).rstrip("/")
    return str(Path(location).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts]) if is_uri(location) else str(Path(location, *parts))


def name(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


def _filesystem(location: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(location)


def exists(location: str) -> bool:
    if not is_uri(location):
        return Path(location).exists()
    import pyarrow.fs

    fs, path = _filesystem(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def write_bytes(location: str, data: bytes) -> None:
    """Readers see the old content or the new, never part: a local file is replaced atomically, an
    object store's PUT makes the object appear whole."""
    if not is_uri(location):
        atomic_write_bytes(location, data)
        return
    fs, path = _filesystem(location)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def delete(location: str) -> None:
    """Remove the file or object at ``location`` if there is one."""
    if not is_uri(location):
        Path(location).unlink(missing_ok=True)
        return
    fs, path = _filesystem(location)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def read_bytes(location: str) -> bytes | None:
    """The content of the file or object at ``location``, None if there is none."""
    if not is_uri(location):
        path = Path(location)
        return path.read_bytes() if path.is_file() else None
    import pyarrow.fs

    fs, path = _filesystem(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read()


def siblings(location: str, prefix: str) -> list[str]:
    """The locations of the files beside ``location``'s folder entry whose names start with ``prefix``
    (in ``location``'s folder), sorted by name."""
    folder = location.rstrip("/").rsplit("/", 1)[0] if is_uri(location) else str(Path(location).parent)
    if not is_uri(location):
        path = Path(folder)
        return sorted(str(p) for p in path.glob(f"{prefix}*") if p.is_file()) if path.is_dir() else []
    import pyarrow.fs

    fs, root = _filesystem(folder)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=False))
    except FileNotFoundError:
        return []
    base = folder.rstrip("/")
    return sorted(f"{base}/{info.base_name}" for info in infos
                  if info.type == pyarrow.fs.FileType.File and info.base_name.startswith(prefix))


def download(location: str, keep=lambda relative: True) -> Path:
    """The files under the URI ``location`` that ``keep`` accepts (by path relative to it), copied
    into a new local temporary folder, which is returned."""
    import pyarrow.fs

    fs, root = _filesystem(location)
    local = Path(tempfile.mkdtemp(prefix="raycl-")) / name(location)  # the folder keeps its name
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
        if info.type != pyarrow.fs.FileType.File:
            continue
        relative = info.path[len(root.rstrip("/")) + 1:]
        if keep(relative):
            target = local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as stream:
                target.write_bytes(stream.read())
    return local
