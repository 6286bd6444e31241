"""Directories on object storage (`s3://`, `gs://`, any pyarrow.fs URI), for registry artifacts.

    if is_remote(uri):
        upload_dir(Path("packed/abc123"), "s3://bucket/tengine/artifacts/mymodel/abc123")
        download_dir("s3://bucket/tengine/artifacts/mymodel/abc123", Path("~/.cache/…/abc123"))

pyarrow.fs, the same filesystem layer Ray Train uses for `distributed.storage_path`, so the same
credentials work (AWS_* / GOOGLE_* variables, instance roles, AWS_ENDPOINT_URL for an
S3-compatible server). pyarrow comes with the `ray` extra; a remote URI without it is an error
naming the extra. No torch here.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"


def is_remote(uri: str | Path) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def _fs(uri: str):
    from tengine.extras import require

    fs_module = require("pyarrow.fs", "ray", f"an object-store artifact root ({uri})")
    return fs_module, *fs_module.FileSystem.from_uri(uri)


def exists(uri: str) -> bool:
    """Whether `uri` holds a complete artifact (its manifest, which is uploaded last)."""
    pafs, fs, path = _fs(uri)
    return fs.get_file_info(f"{path}/{MANIFEST}").type == pafs.FileType.File


def upload_dir(local: Path, uri: str) -> None:
    """Copy the files of `local` to `uri`, the manifest last: a reader that finds the
    manifest finds every file."""
    _, fs, path = _fs(uri)
    fs.create_dir(path, recursive=True)
    files = sorted(p for p in Path(local).iterdir() if p.is_file())
    for file in sorted(files, key=lambda p: p.name == MANIFEST):
        with file.open("rb") as src, fs.open_output_stream(f"{path}/{file.name}") as dst:
            while block := src.read(1 << 22):
                dst.write(block)


def download_dir(uri: str, local: Path) -> None:
    """Copy the files under `uri` (one level) into the directory `local`."""
    pafs, fs, path = _fs(uri)
    local.mkdir(parents=True, exist_ok=True)
    for info in fs.get_file_info(pafs.FileSelector(path)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as src, (local / info.base_name).open("wb") as dst:
                while block := src.read(1 << 22):
                    dst.write(block)
