"""Writes docs/config.md, the reference of every config key, from the config classes'
docstrings and defaults: ``python docs/config_reference.py > docs/config.md``.

A test regenerates it and compares (``tests/test_config_reference.py``): a field added
without a line in its class's docstring, or a default changed, fails there.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import Any

from twotower import IndexConfig, ModelConfig
from twotower.cli import _MODEL_FLAGS
from twotower.models.config import PRESETS
from twotower.training import DistributionConfig, StreamConfig


def _attributes(cls: type) -> dict[str, str]:
    """Field -> its text, from the docstring's ``Attributes:`` (or ``Args:``) section:
    entries ``name[, name]: text`` at one indent, continued at a deeper one."""
    doc = cls.__doc__ or ""
    m = re.search(r"\n([ \t]*)(?:Attributes|Args):\n(.*?)(?:\n[ \t]*\n\1\w+:\n|\Z)", doc,
                  re.S)
    if not m:
        raise SystemExit(f"{cls.__name__}: no Attributes section in its docstring")
    out: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in m.group(2).splitlines():
        if not line.strip():
            continue
        lead = len(line) - len(line.lstrip())
        head = re.match(r"\s*((?:\w+)(?:, \w+)*): (.*)", line)
        if head and (indent is None or lead == indent):
            indent = lead
            names = head.group(1).split(", ")
            for n in names:
                out[n] = head.group(2).strip()
            continue
        for n in names:  # a continuation line (a "- x" list item joins as a sentence)
            out[n] += " " + line.strip().removeprefix("- ")
    return {n: _markdown(t) for n, t in out.items()}


def _markdown(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|")


def _value(v: Any) -> str:
    if isinstance(v, tuple):
        v = list(v)
    return "`" + json.dumps(v).replace("|", "\\|") + "`"  # a bare | ends a table cell


def _table(cls: type, columns: dict[str, dict[str, Any]]) -> list[str]:
    docs = _attributes(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in fields if n not in docs]
    if missing:
        raise SystemExit(f"{cls.__name__}: fields without a line in its docstring: {missing}")
    stray = [n for n in docs if n not in fields]
    if stray:
        raise SystemExit(f"{cls.__name__}: its docstring describes no field {stray}")
    head = "| key | " + " | ".join(columns) + " | meaning |"
    rows = [head, "|" + "---|" * (len(columns) + 2)]
    for n in fields:
        vals = " | ".join(_value(c[n]) for c in columns.values())
        rows.append(f"| `{n}` | {vals} | {docs[n]} |")
    return rows


def main() -> str:
    tutorial = ModelConfig.preset("tutorial").to_dict()
    clicks = ModelConfig.preset("clicks").to_dict()
    default = ModelConfig.preset("default").to_dict()
    names = [f"`--{n.replace('_', '-')}`" for n in _MODEL_FLAGS]
    flags = ", ".join(names[:-1]) + " and " + names[-1]
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config classes by `python docs/config_reference.py > "
        "docs/config.md` (a test checks it is current). Each class is a frozen dataclass: "
        "`from_dict`/`to_dict` round-trip through JSON, an unknown key is refused by name, "
        "and every value is range-checked.",
        "",
        "## `[model]`: `ModelConfig`",
        "",
        "`twotower train --config FILE` reads a TOML or JSON file: a `[model]` table (or a "
        "flat file of these keys) and a `[distribution]` table, or a run's saved "
        "`config.json` (its `model` settings). `--preset` picks the "
        f"column the file changes (`default` unless given); {flags} (lists "
        "comma-separated: `--item-features price,brand`; `--event-weights "
        "view=1,buy=10`) win over the file, even when given at the preset's value. A key "
        "the chosen "
        "model never reads gets a warning naming it, unless it holds the class default "
        "(a run's saved settings hold every key). The presets set only the keys in "
        f"`PRESETS` ({len(PRESETS['default'])} for `default`); the others keep the class "
        "defaults.",
        "",
        *_table(ModelConfig, {"preset `tutorial`": tutorial, "preset `clicks`": clicks,
                              "preset `default`": default}),
        "",
        "## `[distribution]`: `DistributionConfig`",
        "",
        "`--devices`, `--model-parallel`, `--shard-tables`, `--coordinator`, "
        "`--num-processes`, `--process-id` and `--join-timeout` win over the file "
        "(`docs/scaling.md`).",
        "",
        *_table(DistributionConfig, {"default": DistributionConfig().to_dict()}),
        "",
        "## `IndexConfig` (a run's search index)",
        "",
        "`twotower train --index-kind` and `twotower index RUN --kind ... --ef-search ... "
        "--nprobe ... --nlist ... --hnsw-m ...` set these; in Python, "
        "`TwoTower(config, index=IndexConfig(...))` or `model.set_index(IndexConfig(...))` (`docs/search.md`).",
        "",
        *_table(IndexConfig, {"default": IndexConfig().to_dict()}),
        "",
        "## `StreamConfig` (a streamed interaction file)",
        "",
        "`twotower train --stream` sets the columns, `--sep` and `--shuffle-buffer`; in "
        "Python, `InteractionStream(path, StreamConfig(...))` (`docs/scaling.md`).",
        "",
        *_table(StreamConfig, {"default": StreamConfig().to_dict()}),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(main())
