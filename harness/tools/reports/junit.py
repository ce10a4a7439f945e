"""Merging the JUnit XML files of several shards into one (``python -m harness.tools.nightly merge``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


def merge_junit(paths: list[Path], out: Path) -> None:
    """One ``<testsuites>`` holding every ``<testsuite>`` of ``paths`` (missing files are skipped)."""
    root = ET.Element("testsuites")
    for p in paths:
        if p.exists():
            t = ET.parse(p).getroot()
            root.extend(t.findall("testsuite") if t.tag == "testsuites" else [t])
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
