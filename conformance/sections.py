"""conformance/RESULTS.md is written by several scripts: the backend suite writes the document, and
each other script owns one section between its own markers, which the others keep."""

from __future__ import annotations

import os
import re

# (heading, begin marker, end marker) of every section a script other than the backend suite owns.
SECTIONS = [
    ("## Edge cases, op by op", "<!-- edge sweep: begin -->", "<!-- edge sweep: end -->"),
    ("## Node replay against onnxruntime", "<!-- node replay: begin -->", "<!-- node replay: end -->"),
]


def kept_sections(path: str) -> str:
    """The owned sections of an existing document, headings included ('' if none)."""
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    parts = []
    for heading, begin, end in SECTIONS:
        start, stop = doc.find(heading), doc.find(end)
        if start >= 0 and stop > start and begin in doc[start:stop]:
            parts.append(doc[start:stop + len(end)])
    return "".join("\n" + p + "\n" for p in parts)


def put_section(path: str, heading: str, begin: str, end: str, text: str) -> None:
    """Replace the section between ``begin`` and ``end`` with ``text`` (which carries the markers),
    or append it under ``heading``."""
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    if begin in doc:
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end) + "\n?", lambda _: text, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + f"\n\n{heading}\n\n" + text
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)
