"""Links from a report to the files of its run: relative to the report's own folder, so a report.md shows its plots
as images on GitHub, in VS Code and in a copied or downloaded run folder; and the same markdown made readable where a
relative link cannot resolve (a Prefect markdown artifact): each image or link then names the file's full URI.

The Prefect UI renders an artifact's markdown on its own page, with no folder to resolve `compare/means.png`
against, and it cannot show a local file or a `gs://` object as an image at all; so the artifact lists the plots'
URIs as text instead of showing broken images.
"""

from __future__ import annotations

import os
import re

from sftflow.infra.storage import is_gcs, join

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


def relative(uri: str, folder: str) -> str:
    """`uri` relative to `folder` when it lies under it (`compare/means.png`), else `uri` unchanged."""
    if is_gcs(uri) or is_gcs(folder) or _SCHEME.match(uri):
        base = folder.rstrip("/") + "/"
        return uri[len(base):] if uri.startswith(base) else uri
    rel = os.path.relpath(uri, folder)
    return uri if rel == ".." or rel.startswith(".." + os.sep) else rel.replace(os.sep, "/")


def image(alt: str, uri: str, folder: str) -> str:
    """A markdown image of `uri`, linked relative to `folder` (the folder of the report that shows it)."""
    return f"![{_text(alt)}]({relative(uri, folder)})"


def link(text: str, uri: str, folder: str) -> str:
    """A markdown link to `uri`, relative to `folder`."""
    return f"[{_text(text)}]({relative(uri, folder)})"


def file_link(uri: str, folder: str) -> str:
    """A markdown link to `uri` that reads as its path relative to `folder` (`[compare/report.md](compare/report.md)`)."""
    return link(relative(uri, folder), uri, folder)


def _text(s: str) -> str:
    """A link's text without the brackets that would end it early."""
    return " ".join(s.split()).replace("[", "(").replace("]", ")")


def is_relative(target: str) -> bool:
    return not (_SCHEME.match(target) or target.startswith(("/", "#")))


def for_prefect_ui(md: str, folder: str) -> str:
    """`md` (written to lie in `folder`) for a Prefect markdown artifact: an image becomes `*alt*: `URI`` (the UI
    cannot show a local file or a gs:// object, nor resolve a relative path), a relative link its full URI; a gs://
    URI is a link to the object in the Cloud console."""
    def shown(target: str) -> str:
        uri = join(folder, target) if is_relative(target) else target
        if is_gcs(uri):  # opens in the browser for a signed-in user (the console's object URL)
            return f"[{uri}]({uri.replace('gs://', 'https://storage.cloud.google.com/', 1)})"
        return f"`{uri}`"

    def as_text(m: re.Match) -> str:
        alt, target = m.group(1), m.group(2)
        if target.startswith(("https://", "http://")):
            return m.group(0)  # a web image renders as it is
        return f"*{alt or 'image'}*: {shown(target)}"

    def as_uri(m: re.Match) -> str:
        text, target = m.group(1), m.group(2)
        if not is_relative(target):
            return m.group(0)
        return shown(target) if text == target else f"{text} ({shown(target)})"

    return _LINK.sub(as_uri, _IMAGE.sub(as_text, md))
