"""One-to-many: the conditional generator learns a sentence per label or per vector cluster,
its step-by-step decoder matches the training pass, resume is exact, the CLI verbs work, and
every bad input is one sentence with exit status 2, nothing saved touched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from helpers import assert_one_sentence, run_main
from rnnkit.api import condition
from rnnkit.models.conditional import ConditionalConfig, ConditionalGenerator, GuidedDecoder
from rnnkit.tasks.condition import ConditionTask

SENTENCES = {"pos": "what a wonderful and moving film", "neg": "a dull and tedious mess"}
FAST = dict(hidden_size=24, batch_size=8, lr=0.03, seed=1, progress=False, threads=1)
CLI = ["--hidden", "24", "--batch-size", "8", "--lr", "0.03", "--seed", "1", "--no-progress",
       "--threads", "1"]  # fmt: skip


def labelled(tmp_path: Path, n: int = 40) -> Path:
    """A TSV where each label always comes with the same sentence."""
    path = tmp_path / "data.tsv"
    labels = [("pos", "neg")[i % 2] for i in range(n)]
    path.write_text("".join(f"{lab}\t{SENTENCES[lab]}\n" for lab in labels), encoding="utf-8")
    return path


def vectors(tmp_path: Path, n: int = 40, seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    """Captions from 6-D vectors: two clusters, each with its own sentence."""
    rng = np.random.default_rng(seed)
    centres = np.array([[2, 0, 0, 1, 0, 0], [0, 0, 2, 0, -1, 0]], dtype=np.float32)
    which = np.arange(n) % 2
    array = (centres[which] + 0.1 * rng.standard_normal((n, 6))).astype(np.float32)
    text = tmp_path / "captions.txt"
    text.write_text("".join(list(SENTENCES.values())[w] + "\n" for w in which), encoding="utf-8")
    npy = tmp_path / "features.npy"
    np.save(npy, array)
    return text, npy, array


@pytest.fixture(scope="module")
def label_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("condition")
    run = tmp / "run"
    condition.train(labelled(tmp), run, epochs=12, **FAST)  # type: ignore[arg-type]
    return run


# -- the model ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "kind", "cond"), [
    ("lstm", "label", "both"), ("gru", "vector", "init"), ("rnn", "label", "input"),
    ("lstm", "vector", "input"),
])  # fmt: skip
def test_decoder_steps_match_the_training_pass(cell: str, kind: str, cond: str) -> None:
    torch.manual_seed(0)
    config = ConditionalConfig(vocab_size=11, condition_kind=kind, num_labels=3, vector_size=5,
                               condition=cond, hidden_size=8, num_layers=2, cell=cell,
                               embedding_size=6, condition_size=4)  # fmt: skip
    model = ConditionalGenerator(config).eval()
    conds = torch.tensor([0, 2, 1]) if kind == "label" else torch.randn(3, 5)
    tokens = torch.randint(0, 11, (3, 7))
    full = torch.log_softmax(model.logits(conds, tokens), -1)
    decoder, state = model.decoder(conds)
    for t in range(7):
        logp, state = decoder.step(tokens[:, t], state)
        torch.testing.assert_close(logp, full[:, t], rtol=1e-5, atol=1e-5)
    picked = decoder.select(state, torch.tensor([2, 0]))
    assert picked.h.shape == (2, 2, 8) and torch.equal(picked.h[0], state.h[2])


def test_guidance_contrasts_the_label_with_the_mean_of_the_others() -> None:
    """Each guided step is log_softmax((1+g) log P(.|label) - g mean_other log P(.|other)),
    computed from teacher-forced passes; selecting rows keeps each row's contrast rows."""
    torch.manual_seed(0)
    config = ConditionalConfig(vocab_size=11, num_labels=3, hidden_size=8, num_layers=2,
                               cell="gru", embedding_size=6, condition_size=4)  # fmt: skip
    model = ConditionalGenerator(config).eval()
    labels = torch.tensor([0, 2, 1])
    tokens = torch.randint(0, 11, (3, 6))
    per_label = [torch.log_softmax(model.logits(torch.full((3,), j), tokens), -1) for j in range(3)]
    own = torch.stack([per_label[int(lab)][i] for i, lab in enumerate(labels)])
    others = torch.stack(
        [
            torch.stack([per_label[j][i] for j in range(3) if j != int(lab)]).mean(0)
            for i, lab in enumerate(labels)
        ]
    )
    g = 1.5
    expected = torch.log_softmax((1 + g) * own - g * others, -1)
    decoder = GuidedDecoder(model, g)
    state = decoder.initial_state(labels)
    for t in range(6):
        logp, state = decoder.step(tokens[:, t], state)
        torch.testing.assert_close(logp, expected[:, t], rtol=1e-5, atol=1e-5)
    picked = decoder.select(state, torch.tensor([2, 0]))
    again, _ = decoder.step(torch.tensor([4, 4]), picked)
    whole, _ = decoder.step(torch.tensor([4, 4, 4]), state)
    torch.testing.assert_close(again, whole[[2, 0]])
    plain = GuidedDecoder(model, 0.0)
    logp, _ = plain.step(tokens[:, 0], plain.initial_state(labels))
    torch.testing.assert_close(logp, own[:, 0], rtol=1e-5, atol=1e-5)


def test_padding_does_not_change_a_target_and_init_needs_the_condition() -> None:
    torch.manual_seed(0)
    model = ConditionalGenerator(ConditionalConfig(vocab_size=9, num_labels=2, hidden_size=8,
                                                   condition="init")).eval()  # fmt: skip
    short = torch.tensor([[1, 4, 5]])
    padded = torch.tensor([[1, 4, 5, 0, 0], [1, 2, 3, 4, 5]])
    a = model.logits(torch.tensor([1]), short)
    b = model.logits(torch.tensor([1, 0]), padded)[:1, :3]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(model.logits(torch.tensor([0]), short), a)


# -- training and generating ------------------------------------------------------------------


def test_the_generator_learns_a_sentence_per_label(label_run: Path) -> None:
    outputs = {lab: condition.generate(label_run, lab, greedy=True)[0] for lab in SENTENCES}
    assert outputs == SENTENCES  # each label gives its own sentence: the condition matters
    assert outputs["pos"] != outputs["neg"]
    beam = condition.generate_hypotheses(label_run, "neg", beam=3, n_best=2)
    assert beam[0][0][0] == SENTENCES["neg"] and beam[0][0][1] > beam[0][1][1]
    a = condition.generate(label_run, "pos", num_samples=5, seed=3, temperature=0.7)
    assert a == condition.generate(label_run, "pos", num_samples=5, seed=3, temperature=0.7)
    assert len(a) == 5
    guided = condition.generate_hypotheses(label_run, "neg", beam=3, n_best=2, guidance=1.0)
    assert guided[0][0][0] == SENTENCES["neg"] and guided[0][0][1] > guided[0][1][1]
    sampled = condition.generate(label_run, "pos", num_samples=8, seed=2, guidance=1.0)
    for text in sampled:  # the label's own words; none that only the other label uses
        assert "wonderful" in text.split() and not {"dull", "tedious", "mess"} & set(text.split())


@pytest.mark.parametrize(("cond", "cell"), [("init", "gru"), ("input", "rnn"), ("both", "lstm")])
def test_every_conditioning_trains(tmp_path: Path, cond: str, cell: str) -> None:
    run = tmp_path / cond
    result = condition.train(labelled(tmp_path), run, epochs=12, condition=cond, cell=cell,
                             **FAST)  # type: ignore[arg-type]  # fmt: skip
    assert result.best_valid_loss < 0.1
    assert json.loads((run / "config.json").read_text())["model"]["condition"] == cond
    outputs = {lab: condition.generate(run, lab, greedy=True)[0] for lab in SENTENCES}
    assert outputs == SENTENCES


def test_vector_conditioned_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, npy, array = vectors(tmp_path)
    run = tmp_path / "run"
    code, out, err = run_main(["condition", "train", text, "--vectors", npy, "--out", run,
                               "--epochs", "12", *CLI], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads((run / "conditions.json").read_text()) == {"vector_size": 6}
    new = tmp_path / "new.npy"
    np.save(new, array[:4] + 0.05)
    code, out, err = run_main(["condition", "generate", run, "--vectors", new, "--greedy"], capsys)
    assert code == 0, err
    assert out.splitlines() == [list(SENTENCES.values())[i % 2] for i in range(4)]
    code, out, err = run_main(["condition", "generate", run, "--vectors", new, "--row", "1",
                               "--beam", "2"], capsys)  # fmt: skip
    assert code == 0 and out.splitlines() == [SENTENCES["neg"]], err
    code, out, err = run_main(["condition", "eval", run, text, "--vectors", npy, "--format",
                               "json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["perplexity"] < 1.2
    assert condition.generate(run, list(array[1]), greedy=True) == [SENTENCES["neg"]]
    code, _, err = run_main(["condition", "generate", run, "--vectors", new, "--guidance", "0.5"],
                            capsys)  # fmt: skip
    assert code == 2
    assert_one_sentence(err, "--guidance", "vectors")


def test_stopped_and_resumed_ends_with_the_same_weights(tmp_path: Path) -> None:
    data = labelled(tmp_path, 60)
    kw = dict(FAST, epochs=3, dropout=0.3, condition="both")
    condition.train(data, tmp_path / "full", **kw)  # type: ignore[arg-type]
    condition.train(data, tmp_path / "part", max_steps=5, **kw)  # type: ignore[arg-type]
    condition.train(resume=tmp_path / "part", progress=False)
    a, b = (load_file(str(tmp_path / n / "last.safetensors")) for n in ("full", "part"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_batches_are_deterministic_and_cover_each_example(tmp_path: Path) -> None:
    from rnnkit.text.labeled import read_labeled

    examples = read_labeled(labelled(tmp_path, 30))
    make = lambda: ConditionTask.from_labeled(examples[:25], examples[25:], batch_size=4, seed=2)  # noqa: E731
    a, b = make(), make()
    assert a.vocab.tokens[:3] == ["<unk>", "<s>", "</s>"] and a.labels == ["neg", "pos"]
    seen = 0
    for i in range(a.num_batches(0)):
        x, y = a.batch(0, i), b.batch(0, i)
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.conditions, y.conditions)
        assert bool((x.inputs[:, 0] == a.bos_id).all())
        assert x.tokens == int((x.targets >= 0).sum())
        seen += len(x.conditions)
    assert seen == 25


def test_cli_verbs_and_load(
    label_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["condition", "generate", label_run, "--label", "pos",
                               "--num-samples", "4", "--top-p", "0.9", "--seed", "1"], capsys)  # fmt: skip
    assert code == 0, err
    assert len(out.splitlines()) == 4
    code, out, err = run_main(["condition", "generate", label_run, "--label", "neg", "--greedy",
                               "--scores"], capsys)  # fmt: skip
    assert code == 0 and out.split("\t")[1].strip() == SENTENCES["neg"], err
    code, out, err = run_main(["condition", "eval", label_run, labelled(tmp_path, 10)], capsys)
    assert code == 0 and "perplexity:" in out, err
    loaded = rnnkit.load(label_run)
    assert loaded.task_name == "condition" and isinstance(loaded.model, ConditionalGenerator)
    assert loaded.task.labels == ["neg", "pos"]
    code, out, _ = run_main(["condition", "train", labelled(tmp_path), "--out", tmp_path / "c",
                             "--max-steps", "2", *CLI], capsys)  # fmt: skip
    assert code == 0 and "best validation: loss" in out


# -- errors: one sentence, exit status 2, nothing saved touched ---------------------------------


def test_training_errors_are_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, _, array = vectors(tmp_path, 10)
    out = tmp_path / "out"
    short = tmp_path / "short.npy"
    np.save(short, array[:7])
    code, _, err = run_main(["condition", "train", text, "--vectors", short, "--out", out, *CLI],
                            capsys)  # fmt: skip
    assert code == 2
    assert_one_sentence(err, "short.npy", "7 rows", "captions.txt", "10 lines")
    for bad, what in ((array[:, 0], "1-D"), (np.ones((10, 6), np.int64), "int64")):
        path = tmp_path / f"bad{what}.npy"
        np.save(path, bad)
        code, _, err = run_main(["condition", "train", text, "--vectors", path, "--out", out,
                                 *CLI], capsys)  # fmt: skip
        assert code == 2
        assert_one_sentence(err, path.name, what, "2-D float")
    nan = array.copy()
    nan[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    (tmp_path / "junk.npy").write_text("not numbers", encoding="utf-8")
    for name, fragments in (("nan.npy", ["row 4", "NaN"]), ("junk.npy", ["not a .npy"])):
        code, _, err = run_main(["condition", "train", text, "--vectors", tmp_path / name,
                                 "--out", out, *CLI], capsys)  # fmt: skip
        assert code == 2
        assert_one_sentence(err, name, *fragments)
    holes = tmp_path / "holes.txt"
    holes.write_text("a film\n\nanother film\n", encoding="utf-8")
    np.save(tmp_path / "three.npy", np.zeros((3, 6), np.float32))
    code, _, err = run_main(["condition", "train", holes, "--vectors", tmp_path / "three.npy",
                             "--out", out, *CLI], capsys)  # fmt: skip
    assert code == 2
    assert_one_sentence(err, "holes.txt", "line 2", "empty")
    tsv = tmp_path / "gap.tsv"
    tsv.write_text("pos\tgood film\nneg\t  \n", encoding="utf-8")
    code, _, err = run_main(["condition", "train", tsv, "--out", out, *CLI], capsys)
    assert code == 2
    assert_one_sentence(err, "gap.tsv", "line 2")
    assert not out.exists() or not (out / "config.json").exists()


def test_generation_errors_are_one_sentence(
    label_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in label_run.iterdir() if p.is_file()}
    code, _, err = run_main(["condition", "generate", label_run, "--label", "meh"], capsys)
    assert code == 2
    assert_one_sentence(err, "'meh'", "neg, pos")
    code, _, err = run_main(["condition", "generate", label_run, "--label", "pos", "--beam", "0"],
                            capsys)  # fmt: skip
    assert code == 2
    assert_one_sentence(err, "--beam", "0")
    code, _, err = run_main(["condition", "generate", label_run, "--vectors", "x.npy"], capsys)
    assert code == 2
    assert_one_sentence(err, "labels")
    for bad in ("-1", "nan"):
        code, _, err = run_main(["condition", "generate", label_run, "--label", "pos",
                                 "--guidance", bad], capsys)  # fmt: skip
        assert code == 2
        assert_one_sentence(err, "--guidance", bad)
    after = {p.name: p.read_bytes() for p in label_run.iterdir() if p.is_file()}
    assert after == before


def test_vector_width_at_generate_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, npy, _ = vectors(tmp_path, 10)
    run = tmp_path / "run"
    condition.train(text, run, vectors=npy, max_steps=2, **FAST)  # type: ignore[arg-type]
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((2, 8), np.float32))
    before = (run / "model.safetensors").read_bytes()
    code, _, err = run_main(["condition", "generate", run, "--vectors", wide], capsys)
    assert code == 2
    assert_one_sentence(err, "wide.npy", "width 8", "width 6")
    code, _, err = run_main(["condition", "generate", run, "--label", "pos"], capsys)
    assert code == 2
    assert_one_sentence(err, "vectors")
    code, _, err = run_main(["condition", "train", text, "--vectors", wide, "--out", run,
                             "--overwrite", *CLI], capsys)  # fmt: skip
    assert code == 2
    assert_one_sentence(err, "wide.npy", "2 rows", "10 lines")
    assert (run / "model.safetensors").read_bytes() == before


def test_swapped_labels_are_refused_and_old_label_lists_load(
    label_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(label_run, run)
    saved = json.loads((run / "conditions.json").read_text())
    assert saved["tokens"] == ["neg", "pos"] and len(saved["tokens_sha256"]) == 64
    (run / "conditions.json").write_text(json.dumps({**saved, "tokens": ["pos", "neg"]}))
    code, _, err = run_main(["condition", "generate", run, "--label", "pos", "--greedy"], capsys)
    assert code == 2
    assert_one_sentence(err, "conditions.json", "checksum")
    (run / "conditions.json").write_text(json.dumps(["neg", "pos"]))  # as written before 0.2
    assert condition.generate(run, "pos", greedy=True) == [SENTENCES["pos"]]
