import json

import pytest

from ctcasr.data.manifest import read_manifest, write_manifest
from ctcasr.errors import CtcasrError


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_resolves_relative_paths_and_keeps_extra_keys(tmp_path):
    m = write_manifest(tmp_path / "m.jsonl", [
        {"id": "a", "audio": "wav/a.wav", "duration": 1.5, "text": " yes  no ", "spk": "s1"},
        {"id": "b", "audio": "/abs/b.wav", "duration": 2, "text": "no", "offset": 0.5},
    ])
    assert m == 2
    a, b = read_manifest(tmp_path / "m.jsonl")
    assert a.audio == tmp_path / "wav/a.wav" and a.text == "yes no" and a.extra == {"spk": "s1"}
    assert a.offset is None and a.where == f"{tmp_path / 'm.jsonl'}:1"
    assert str(b.audio) == "/abs/b.wav" and b.duration == 2.0 and b.offset == 0.5


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"id": "a", "audio": "x.wav", "duration": 1}', "missing key(s) text"),
        ('{"id": "a", "audio": "x.wav", "duration": 1, "text": "  "}', "empty transcript"),
        ('{"id": "a", "audio": "x.wav", "duration": -1, "text": "x"}', "must be positive"),
        ('{"id": "a", "audio": "x.wav", "duration": "1", "text": "x"}', "must be a number"),
        ('{"id": "", "audio": "x.wav", "duration": 1, "text": "x"}', "'id' must be"),
        ('{"id": "a", "audio": "x.wav", "duration": 1, "text": "x", "offset": -2}', "'offset'"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    good = json.dumps({"id": "ok", "audio": "x.wav", "duration": 1, "text": "x"})
    path = write_lines(tmp_path / "m.jsonl", [good, line])
    with pytest.raises(CtcasrError) as e:
        read_manifest(path)
    assert f"{path}:2:" in str(e.value) and message in str(e.value)


def test_duplicate_ids_and_empty_manifest(tmp_path):
    good = json.dumps({"id": "ok", "audio": "x.wav", "duration": 1, "text": "x"})
    with pytest.raises(CtcasrError, match="duplicate id 'ok'"):
        read_manifest(write_lines(tmp_path / "d.jsonl", [good, good]))
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(CtcasrError, match="manifest is empty"):
        read_manifest(tmp_path / "e.jsonl")
    with pytest.raises(CtcasrError, match="cannot read manifest"):
        read_manifest(tmp_path / "missing.jsonl")


def test_decode_manifests_may_lack_text(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", ['{"id": "a", "audio": "x.wav"}'])
    (u,) = read_manifest(path, require_text=False)
    assert u.text == "" and u.duration == 0.0
