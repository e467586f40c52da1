"""The configuration reference (docs/config.md), written from the config dataclasses.

    python -m ctcasr.configdoc > docs/config.md

Every field of :class:`ctcasr.config.Config` and of the component configs it names (front end,
each encoder's ``encoder_conf``), with its type, its default and the comment beside it in the
source: the comment lines just above a field (at its indentation), the comment on its line, and
comment lines under it indented deeper. tests/test_docs.py checks that docs/config.md is what
this writes, so the reference follows the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import textwrap
import tokenize

from ctcasr import config

HEADER = """# Configuration reference

A config is a YAML file of these sections; every key is optional (the default applies) and a
key that is not here is an error naming it. `ctcasr train --set SECTION.KEY=VALUE` changes one
value from the command line (the value is read as YAML: `--set data.augment.speeds=[0.9,1.0,1.1]`).
A checkpoint keeps the resolved config, so decoding needs none. The recipes' configs
(`egs/*/conf/*.yaml`) are worked examples; [own-data.md](own-data.md) starts from one.

This page is written by `python -m ctcasr.configdoc` from the dataclasses in `ctcasr/config.py`
and `ctcasr/models/`, and a test keeps it so.
"""


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comments that document it in ``cls``'s source."""
    src = textwrap.dedent(inspect.getsource(cls))
    lines = src.splitlines()
    comments: dict[int, str] = {}  # line -> the comment's text after '#'
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string[1:]
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    alone = {n: c for n, c in comments.items() if n not in code_lines}  # comment-only lines
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    claimed: set[int] = set()
    for n, line in enumerate(lines, 1):
        stripped = line.lstrip()
        name = stripped.split(":", 1)[0]
        if name not in names or name in out or ":" not in stripped:
            continue
        above, k = [], n - 1
        while k in alone and k not in claimed:
            above.insert(0, alone[k])
            k -= 1
        own = [comments[n]] if n in comments else []
        k = n + 1
        while own and k in alone and alone[k].startswith("  "):  # aligned under the comment
            own.append(alone[k])
            claimed.add(k)
            k += 1
        text = " ".join(" ".join(p.split()) for p in [*above, *own])
        out[name] = text.replace("|", "\\|")
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if dataclasses.is_dataclass(value):
        return "(section)"
    value = config.to_dict(value)
    if value == {}:
        return "(the encoder's)"
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f'`"{value}"`'


def table(prefix: str, cls: type) -> tuple[list[str], list[tuple[str, type]]]:
    """The rows of ``cls``'s fields under ``prefix``, and the nested sections it holds."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):  # inherited fields keep their parent's comments
        if dataclasses.is_dataclass(base):
            docs.update({k: v for k, v in field_comments(base).items() if v})
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            nested.append((key, type(default)))
            continue
        kind = str(f.type).replace(" | ", " or ")
        rows.append(f"| `{key}` | {kind} | {_default(f)} | {docs.get(f.name, '')} |")
    return rows, nested


def section(title: str, cls: type, note: str = "", prefix: str | None = None) -> list[str]:
    rows, nested = table(title if prefix is None else prefix, cls)
    doc = inspect.getdoc(cls) or ""
    own = doc if doc and not doc.startswith(cls.__name__ + "(") else ""
    out = [f"## {title}", ""]
    if own or note:
        out += [" ".join(x for x in (own, note) if x), ""]
    if rows:
        out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |", *rows, ""]
    for key, sub in nested:
        out += section(key, sub)
    return out


def reference() -> str:
    out = [HEADER]
    for f in dataclasses.fields(config.Config):
        out += section(f.name, type(f.default_factory()))  # type: ignore[misc]
        if f.name == "model":
            by_class: dict[type, list[str]] = {}
            for name, conf_cls in config.ENCODER_CONFIGS.items():
                by_class.setdefault(conf_cls, []).append(name)
            for conf_cls, names in by_class.items():
                which = " or ".join(f"`{n}`" for n in names)
                out += section(f"model.encoder_conf ({', '.join(names)})", conf_cls,
                               f"With `model.encoder:` {which}.", "model.encoder_conf")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(reference(), end="")
