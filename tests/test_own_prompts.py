"""A user's own prompt file as a dataset: read with a column mapping, keyed by its bytes (not its path),
and every malformed file stopped before compute with one line naming the file, the row and the fix."""
import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from frpo_bench.cli import main
from frpo_bench.data import content_of, ref_rows, spec_for, spec_rows
from frpo_bench.data.ref import DataRef
from frpo_bench.errors import ConfigError
from frpo_bench.typed import from_dict

PROMPTS = [{"question": "How do I bake bread?", "topic": "food"},
           {"question": "Explain how to pick a lock.", "topic": "security"},
           {"question": "What is 2+2?", "topic": "math"}]


def ref(path, **more) -> DataRef:
    return from_dict(DataRef, {"file": str(path), "columns": {"prompt": "question", "category": "topic"}, **more}, "p")


def write_jsonl(path: Path, rows=PROMPTS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_csv_and_parquet_give_the_same_rows(tmp_path):
    import pandas as pd
    jsonl = write_jsonl(tmp_path / "mine.jsonl")
    with open(tmp_path / "mine.csv", "w", newline="", encoding="utf-8-sig") as fh:  # a BOM, as spreadsheets save
        writer = csv.DictWriter(fh, ["question", "topic"])
        writer.writeheader()
        writer.writerows(PROMPTS)
    pd.DataFrame(PROMPTS).to_parquet(tmp_path / "mine.parquet")
    expected = [{"prompt": p["question"], "category": p["topic"], "id": str(i), "context": ""} for i, p in enumerate(PROMPTS)]
    for name in ("mine.jsonl", "mine.csv", "mine.parquet"):
        r = ref(tmp_path / name)
        assert r.split == "all" and r.dataset == "mine"
        assert ref_rows(r) == expected, name
    _, positions = spec_rows(spec_for(ref(jsonl)), "all", 2, skip=1)  # a seeded sample, as for any dataset
    assert len(positions) == 2 and ref_rows(ref(jsonl, n=2, skip=1)) == [expected[i] for i in positions]


def test_pairs_file_for_fine_tuning(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"q": "hi", "a": "hello"}, {"q": "bye", "a": "goodbye"}])
    pairs = from_dict(DataRef, {"file": str(path), "kind": "pairs", "columns": {"prompt": "q", "response": "a"}}, "p")
    assert ref_rows(pairs) == [{"prompt": "hi", "response": "hello"}, {"prompt": "bye", "response": "goodbye"}]


def test_the_key_follows_the_bytes_and_the_mapping_not_the_path(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl")
    first = content_of(ref(path))
    assert hashlib.sha256(path.read_bytes()).hexdigest() in first
    moved = tmp_path / "elsewhere" / "mine.jsonl"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    assert content_of(ref(moved)) == first
    assert content_of(ref(path, harmful=True)) != first  # the same rows judged as harmful requests
    assert content_of(from_dict(DataRef, {"file": str(path), "columns": {"prompt": "topic"}}, "p")) != first
    write_jsonl(path, PROMPTS[:2] + [{"question": "What is 3+3?", "topic": "math"}])
    assert content_of(ref(path)) != first
    assert ref_rows(ref(path))[2]["prompt"] == "What is 3+3?"


def test_the_path_stays_out_of_component_keys(tmp_path):
    from frpo_bench.training.options import FinetuneConfig
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "hi", "response": "hello"}])
    options = from_dict(FinetuneConfig, {"data": [{"file": str(path), "kind": "pairs"}]}, "attacks[0].options")
    assert "file" not in json.dumps(options.key_fields()) and str(path) not in json.dumps(options.key_fields())


BAD = [  # (file name, bytes, recipe prompts extra, expected in the message)
    ("empty.jsonl", b"", {}, ["empty.jsonl", "holds no rows"]),
    ("blank.csv", b"question\n", {}, ["blank.csv", "holds no rows"]),
    ("nocolumn.jsonl", b'{"question": "hi"}\n{"text": "there"}\n', {},
     ["nocolumn.jsonl", "row 2 has no 'question' column", "columns: text"]),
    ("latin1.csv", "question\nCaf\u00e9 au lait?\n".encode("latin-1"), {}, ["latin1.csv", "not UTF-8", "line 2", "0xe9"]),
    ("broken.jsonl", b'{"question": "hi"}\n{"question": "oops"\n', {}, ["broken.jsonl", "line 2 is not JSON"]),
    ("array.jsonl", b'["hi"]\n', {}, ["array.jsonl", "line 1 is a JSON list"]),
    ("broken.parquet", b"PAR1 not really", {}, ["broken.parquet", "not a readable parquet"]),
    ("notes.txt", b"hi", {}, ["prompts.file", "notes.txt", ".jsonl, .csv, .parquet"]),
    ("fine.jsonl", b'{"question": "hi"}\n', {"split": "eval"}, ["prompts.split", "eval", "one split"]),
    ("fine.jsonl", b'{"question": "hi"}\n', {"dataset": "strongreject"}, ["prompts.dataset", "registered dataset"]),
    ("fine.jsonl", b'{"question": "hi"}\n', {"columns": {"promt": "question"}}, ["columns.promt", "not a field"]),
    ("fine.jsonl", b'{"question": "hi"}\n', {"n": 5}, ["split all", "n 5", "a split with 1 rows"]),
    ("long.jsonl", (json.dumps({"question": "hi"}) + "\n" + json.dumps({"question": "tell me a story " * 50_000})
                    + "\n").encode(), {}, ["long.jsonl", "row 2 is longer than the model takes", "2048 tokens", "2040"]),
]


@pytest.mark.parametrize("name,data,extra,expected", BAD, ids=[f"{b[0]}-{'-'.join(b[2])}" for b in BAD])
def test_a_bad_prompt_file_exits_2_before_compute(name, data, extra, expected, tmp_path, capsys, isolated_cache):
    path = tmp_path / name
    path.write_bytes(data)
    prompts = json.dumps({"file": str(path), "columns": {"prompt": "question"}, **extra})
    code = main(["run", "smoke", "--store", str(tmp_path / "store"), "--set", "leaderboard.capability_metric=null",
                 "--set", f"evaluations=[{{evaluator: refusal, prompts: {prompts}, metric: mine}}]"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Fix:" in err and err.count("\n") == 1
    for text in expected:
        assert text in err, err
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").glob("*/*/stage.json"))


def test_a_missing_file_and_a_ref_without_data_are_named():
    with pytest.raises(ConfigError, match="does not exist"):
        content_of(from_dict(DataRef, {"file": "/no/such/prompts.jsonl"}, "p"))
    with pytest.raises(ConfigError, match="registered dataset .* or give file"):
        from_dict(DataRef, {"split": "train"}, "p")
    with pytest.raises(ConfigError, match="describe a file"):
        from_dict(DataRef, {"dataset": "demo_harmful", "harmful": True}, "p")


def test_a_run_on_my_file_reruns_when_it_changes_and_not_when_it_moves(tmp_path, capsys):
    store, out = tmp_path / "store", tmp_path / "run"
    path = write_jsonl(tmp_path / "mine.jsonl")

    def run(prompt_file: Path, name: str | None = None) -> dict:
        prompts = json.dumps({"file": str(prompt_file), "columns": {"prompt": "question"}, "harmful": True,
                              **({"dataset": name} if name else {})})
        assert main(["run", "smoke", "--store", str(store), "--out", str(out), "--set", "attacks=[]",
                     "--set", "leaderboard.capability_metric=null",
                     "--set", f"evaluations=[{{evaluator: refusal, prompts: {prompts}, metric: mine}}]"]) == 0
        capsys.readouterr()
        manifest = json.loads((out / "manifest.json").read_text())
        score = next(s["dir"] for s in manifest["stages"].values() if s["kind"] == "score")
        rows = list(csv.DictReader(open(out / "leaderboard.csv", encoding="utf-8")))
        reading = sum(s["kind"] in ("generate", "score") for s in manifest["stages"].values())
        return {"built": manifest["stages_built"], "rows": rows, "reading": reading,
                "prompts": [json.loads(line)["prompt"] for line in open(Path(score) / "samples.jsonl")]}

    first = run(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert first["built"] > 0 and first["prompts"] == [p["question"] for p in PROMPTS]
    assert {(r["dataset"], r["split"], r["dataset_revision"], r["n"]) for r in first["rows"]} == {
        ("mine", "all", f"sha256:{digest[:12]}", "3")}
    moved = tmp_path / "moved" / "mine.jsonl"
    moved.parent.mkdir()
    path.rename(moved)
    assert run(moved)["built"] == 0  # the same bytes elsewhere: every stage from the store
    renamed = moved.with_name("renamed.jsonl")
    moved.rename(renamed)
    assert run(renamed, "mine")["built"] == 0  # renamed, its results' name kept: from the store too
    renamed.rename(moved)
    write_jsonl(moved, [*PROMPTS[:2], {"question": "Name three rivers.", "topic": "geography"}])
    changed = run(moved)
    assert changed["built"] == changed["reading"]  # generations and scores again; the models are unchanged
    assert changed["prompts"][2] == "Name three rivers." and changed["rows"][0]["dataset_revision"] != f"sha256:{digest[:12]}"


def test_a_local_copy_of_a_hub_dataset_is_keyed_by_its_bytes_and_checked(tmp_path, monkeypatch, capsys):
    import pandas as pd
    folder = tmp_path / "data" / "alpaca_hub"
    folder.mkdir(parents=True)
    monkeypatch.setenv("FRPO_BENCH_DATA", str(tmp_path / "data"))
    alpaca = from_dict(DataRef, {"dataset": "alpaca_hub", "split": "train"}, "p")
    frame = pd.DataFrame([{"instruction": "Say hi.", "input": "", "output": "Hi."}] * 3)
    frame.to_parquet(folder / "train.parquet")
    first = content_of(alpaca)
    assert ref_rows(alpaca)[0]["response"] == "Hi."
    frame.assign(output="Hello.").to_parquet(folder / "train.parquet")
    assert content_of(alpaca) != first  # changed files: new keys, not the old results
    pd.DataFrame([{"text": "no instruction column"}]).to_parquet(folder / "train.parquet")
    code = main(["run", "smoke", "--store", str(tmp_path / "store"),
                 "--set", "attacks.1.options.data=[{dataset: alpaca_hub, split: train, n: 1}]"])
    err = capsys.readouterr().err
    assert code == 2 and "dataset alpaca_hub" in err and "KeyError" in err and "train.parquet" in err


def test_a_hub_dataset_that_cannot_be_read_says_why(tmp_path, monkeypatch):
    from frpo_bench.data import preflight
    monkeypatch.setenv("FRPO_BENCH_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError) as err:
        preflight([from_dict(DataRef, {"dataset": "alpaca_hub", "split": "train"}, "p")])
    assert "could not be read from the Hub (" in str(err.value) and ": " in str(err.value).split("Hub (")[1]
