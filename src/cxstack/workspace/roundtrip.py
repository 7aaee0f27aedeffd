"""ruamel.yaml round-trip helpers for the workspace files people edit: comments, key order and quoting
survive a load and dump, and what is written reads back the same with the loader's PyYAML (YAML 1.1)."""

from __future__ import annotations

import re

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import SingleQuotedScalarString


def yaml_scalar(text: str) -> str:
    """`text`, quoted when PyYAML (the loader's reader, YAML 1.1) would not read it back as this string:
    ruamel writes YAML 1.2, where `yes`, `on` and `no` are plain strings, but PyYAML reads booleans."""
    try:
        plain_ok = pyyaml.safe_load(text) == text
    except pyyaml.YAMLError:
        plain_ok = False
    return text if plain_ok else SingleQuotedScalarString(text)


def roundtrip_yaml() -> YAML:
    yaml = YAML()  # round-trip: comments and key order survive a load and dump
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long examples
    return yaml


def detect_indent(text: str) -> tuple[int, int]:
    """(sequence indent, dash offset) as the user wrote them, so appended items look like the rest."""
    match = re.search(r"^( *)\S[^\n]*:[ \t]*\n(?:[ \t]*#[^\n]*\n|[ \t]*\n)*( *)- ", text, re.MULTILINE)
    if match is None:
        return 4, 2
    offset = max(len(match.group(2)) - len(match.group(1)), 0)
    return offset + 2, offset
