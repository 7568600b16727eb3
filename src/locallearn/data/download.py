"""Opt-in download of a dataset's files from their official URLs (urllib only, no extra dependency)."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from ..errors import DataError
from .checksums import check_md5, md5_file


def download(urls: Iterable[str], root: Path, *, timeout: float = 60.0) -> None:
    """Download each URL into `root` under its own file name, skipping files already there.

    Each file lands under a .part name first and is renamed once complete and md5-checked, so that an
    interrupted download never passes for the real file.
    """
    root.mkdir(parents=True, exist_ok=True)
    for url in urls:
        target = root / url.rsplit("/", 1)[1]
        if target.exists():
            continue
        part = target.with_name(target.name + ".part")
        manual = f"download {url} by hand and place it at {target}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except OSError as e:  # URLError, HTTPError and socket timeouts are all OSErrors
            part.unlink(missing_ok=True)
            raise DataError(f"downloading {url} failed ({e}); {manual}") from e
        try:
            check_md5(target.name, md5_file(part), f"the download of {url}", fix=f"try again, or {manual}")
        except DataError:
            part.unlink()
            raise
        part.replace(target)
