"""The docs as a user reads them: every `ctcasr` command line in README.md and docs/*.md names a
verb and options that exist, and the configuration reference is what the code says."""

from __future__ import annotations

import re
import shlex

import pytest
import typer
from conftest import REPO

from ctcasr.cli import app

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND = re.compile(r"(?:^|[\s`(|;])(?:\.venv/bin/)?ctcasr ([a-z][a-z0-9-]*)((?: [^`|;#]*)?)")
FENCE = re.compile(r"^```.*?$(.*?)^```", re.S | re.M)


def command_lines(text: str) -> list[str]:
    """`ctcasr VERB ...` as written: in code blocks (continued lines joined, comments off) and
    in inline code."""
    found = []
    for block in FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s#.*$", "", line)
            found += [f"{m[0]}{m[1]}" for m in COMMAND.findall(line)]
    prose = FENCE.sub("", text)
    for span in re.findall(r"`([^`\n]+)`", prose):
        found += [f"{m[0]}{m[1]}" for m in COMMAND.findall(span)]
    return [" ".join(x.split()) for x in found]


def option_names(verb: str) -> set[str]:
    command = typer.main.get_command(app).commands[verb]  # type: ignore[attr-defined]
    names = {"--help"}
    for p in command.params:
        names.update(getattr(p, "opts", []))
        names.update(getattr(p, "secondary_opts", []))
    return names


def all_commands() -> list[tuple[str, str]]:
    return [(f"{doc.relative_to(REPO)}", line) for doc in DOCS
            for line in command_lines(doc.read_text(encoding="utf-8"))]


def test_the_docs_show_every_verb():
    verbs = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    shown = {line.split()[0] for _, line in all_commands()}
    assert verbs <= shown, f"verbs no doc shows: {sorted(verbs - shown)}"


@pytest.mark.parametrize("where,line", all_commands())
def test_every_command_line_parses(where, line):
    verbs = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    verb, *args = shlex.split(line.replace("[", " ").replace("]", " "))
    assert verb in verbs, f"{where}: `ctcasr {verb}`: no such verb"
    known = option_names(verb)
    for arg in args:
        if not arg.startswith("-") or arg == "-" or re.fullmatch(r"-[\d.]+|-inf", arg):
            continue
        name = arg.split("=", 1)[0]
        assert name in known, f"{where}: `ctcasr {line}`: {verb} has no option {name}"


def test_the_extractor_finds_commands_in_blocks_and_prose():
    text = ("Run `ctcasr decode --checkpoint m.pt` or:\n\n```bash\nctcasr train -c x.yaml \\\n"
            "  --set a=1  # a comment --not-an-option\nls *.wav | ctcasr transcribe m.pt -\n"
            "torchrun --nproc_per_node=4 -m ctcasr train ...\n```\n`ctcasr.load(...)`\n")
    assert command_lines(text) == ["train -c x.yaml --set a=1", "transcribe m.pt -",
                                   "train ...", "decode --checkpoint m.pt"]


def test_the_configuration_reference_is_current():
    from ctcasr.configdoc import reference

    assert (REPO / "docs" / "config.md").read_text(encoding="utf-8") == reference(), \
        "docs/config.md is stale: python -m ctcasr.configdoc > docs/config.md"


def test_field_comments_are_read_from_the_source():
    from ctcasr.config import AugmentConfig, DataConfig, TrainConfig
    from ctcasr.configdoc import field_comments

    augment = field_comments(AugmentConfig)
    assert augment["warps"] == ("VTLP: Kaldi VTLN warp of the mel filterbank (a different vocal "
                                "tract length), one per utterance")
    assert augment["noise_prob"] == "share of utterances that get white noise ..."
    data = field_comments(DataConfig)
    assert data["feature_cache"].startswith("where training keeps fbank between epochs")
    assert data["num_workers"] == "DataLoader worker processes"
    assert field_comments(TrainConfig)["inter_ctc_weight"].startswith("loss = (1 - w) CTC")
