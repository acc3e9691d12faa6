"""Download and unpack ESC-50 from GitHub: resumable, optionally checksummed, safe to extract.

The archive is fetched into ``DIR/master.zip.part`` (an interrupted download resumes from there with an
HTTP Range request), renamed to ``DIR/master.zip`` once complete, checked member by member (nothing may
land outside the target: no absolute paths, no ``..``), unpacked into a temporary folder and renamed to
``DIR/ESC-50`` (the archive's ESC-50-master/) in one step, so a dataset folder is either complete or absent.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

DEFAULT_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
ARCHIVE_ROOT = "ESC-50-master"  # the archive's top folder
DATASET_FOLDER = "ESC-50"  # what it is unpacked as: the path every command defaults to is data/ESC-50
USER_AGENT = "esc50-edge-downloader"

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """The download or the archive failed; the message names the URL or file and what to do."""


def fetch(url: str, dest, sha256: str = None, progress: bool = True, timeout: float = 60.0,
          chunk_size: int = 1 << 20) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a partial ``.part`` left by an earlier try."""
    from tqdm import tqdm

    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    response = _open(url, offset, part, timeout)
    if response is not None:
        if response.status != 206:
            offset = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        with response, open(part, "ab" if offset else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=dest.name, disable=not progress) as bar:
            try:
                while chunk := response.read(chunk_size):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except OSError as err:
                raise DownloadError(f"{url}: connection lost after {received} bytes ({err}); "
                                    f"run the command again to resume from {part}") from None
        if total is not None and received != total:
            raise DownloadError(f"{url}: download interrupted at {received} of {total} bytes; "
                                f"run the command again to resume from {part}")
    if sha256:
        try:
            verify_sha256(part, sha256)
        except DownloadError:
            part.unlink()
            raise
    os.replace(part, dest)
    return dest


def _open(url: str, offset: int, part: Path, timeout: float):
    """The HTTP response for the bytes from ``offset`` on, or None when ``part`` already holds them all."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        if err.code == 416 and _range_total(err.headers.get("Content-Range")) == offset:
            return None
        hint = f"; delete {part} to start over" if err.code == 416 else ""
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}{hint}") from None
    except (URLError, OSError) as err:
        raise DownloadError(f"{url}: cannot connect ({getattr(err, 'reason', err)})") from None
    if response.status == 206 and _range_start(response.headers.get("Content-Range")) != offset:
        response.close()
        raise DownloadError(f"{url}: server answered the wrong byte range; delete {part} to start over")
    return response


def _range_start(content_range):
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _range_total(content_range):
    match = re.match(r"bytes [\d*-]+/(\d+)", content_range or "")
    return int(match.group(1)) if match else None


def verify_sha256(path, expected: str) -> None:
    """Raise DownloadError unless the file's SHA-256 is ``expected`` (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != expected.lower():
        raise DownloadError(f"{path}: SHA-256 is {digest.hexdigest()}, expected {expected.lower()}")


def unsafe_reason(name: str):
    """Why an archive member name would escape the target folder, or None if it stays inside."""
    windows = PureWindowsPath(name)
    if name.startswith(("/", "\\")) or windows.drive or windows.is_absolute():
        return "is an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "climbs out of the target with '..'"
    return None


def extract(archive, to, root: str = ARCHIVE_ROOT, folder: str = DATASET_FOLDER) -> Path:
    """Unpack the ``root/`` folder of a zip archive to ``to/folder``, refusing members that escape ``to``."""
    archive, to = Path(archive), Path(to)
    final = to / folder
    if final.exists():
        raise DownloadError(f"{final} already exists; remove it to unpack {archive} again")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise DownloadError(f"{archive}: not a readable zip archive ({err}); delete it and download again") from None
    with zf:
        for info in zf.infolist():
            reason = unsafe_reason(info.filename)
            if reason:
                raise DownloadError(f"{archive}: refusing to extract, member {info.filename!r} {reason}")
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=to))
        try:
            zf.extractall(staging)
            if not (staging / root).is_dir():
                raise DownloadError(f"{archive}: no {root}/ folder inside; is this the ESC-50 archive?")
            os.rename(staging / root, final)
        except zipfile.BadZipFile as err:
            raise DownloadError(f"{archive}: corrupt archive ({err}); delete it and download again") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def download(to, url: str = DEFAULT_URL, sha256: str = None, keep_archive: bool = False,
             progress: bool = True) -> Path:
    """Fetch and unpack ESC-50 into ``to/ESC-50`` (skipped if already there); returns that folder."""
    to = Path(to)
    final = to / DATASET_FOLDER
    if (final / "meta" / "esc50.csv").is_file():
        log.info("%s is already there; nothing to download", final)
        return final
    to.mkdir(parents=True, exist_ok=True)
    archive = to / "master.zip"
    if archive.is_file():
        log.info("reusing %s", archive)
        if sha256:
            verify_sha256(archive, sha256)
    else:
        log.info("downloading %s to %s", url, archive)
        fetch(url, archive, sha256=sha256, progress=progress)
    log.info("unpacking %s", archive)
    extract(archive, to)
    if not keep_archive:
        archive.unlink()
    return final
