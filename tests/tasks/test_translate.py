"""The encoder-decoder: the model's step path equals its teacher-forced pass, a sentence is
translated the same alone or in any batch, search scores are the model's own probabilities,
a tiny translator learns, resume is exact, subwords, and every bad input is one sentence."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from helpers import assert_one_sentence, run_main
from rnnkit.api import translate
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig, TranslatorDecoder
from rnnkit.search import beam_search, greedy
from rnnkit.tasks.translate import TranslateTask

WORDS = ["zwei", "drei", "vier", "hund", "katze", "haus", "baum", "rot", "blau", "gross", "klein"]
ENGLISH = dict(
    zip(
        WORDS,
        ["two", "three", "four", "dog", "cat", "house", "tree", "red", "blue", "big", "small"],
    )
)


def make_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    """A toy language pair: the target is the source's words translated, in reverse order."""
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
        src.append(" ".join(words))
        tgt.append(" ".join(ENGLISH[w] for w in reversed(words)))
    return src, tgt


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mt")
    files = {}
    for split, n, seed in (("train", 600, 1), ("valid", 40, 2)):
        src, tgt = make_pairs(n, seed)
        for side, lines in (("de", src), ("en", tgt)):
            p = d / f"{split}.{side}"
            p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            files[f"{split}.{side}"] = p
    return files


SMALL = dict(embedding_size=16, hidden_size=32, dropout=0.0, threads=1, progress=False)


def train_run(data: dict[str, Path], out: Path, **kw: object) -> Path:
    settings: dict = dict(SMALL, valid_source=data["valid.de"], valid_target=data["valid.en"])
    settings.update(kw)
    translate.train(data["train.de"], data["train.en"], out, **settings)
    return out


@pytest.fixture(scope="module")
def trained(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "attn"
    return train_run(data, out, attention="general", bidirectional=True, epochs=6, lr=1e-2,
                     batch_size=16)  # fmt: skip


def tiny_model(attention: str, feeding: bool, cell: str) -> Seq2Seq:
    cfg = Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=15, hidden_size=8, embedding_size=6,
                        attention=attention, input_feeding=feeding, cell=cell, num_layers=2,
                        bidirectional=attention != "dot", dropout=0.0)  # fmt: skip
    return Seq2Seq(cfg).double().eval()


def toy_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 20, (3, 7), generator=g)
    lengths = torch.tensor([7, 4, 2])
    src[1, 4:] = 0
    src[2, 2:] = 0
    tgt_in = torch.randint(4, 15, (3, 5), generator=g)
    tgt_in[:, 0] = 2
    return src, lengths, tgt_in


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize(
    "attention,feeding",
    [("none", False), ("dot", True), ("general", True), ("general", False), ("bahdanau", True)],
)
def test_step_by_step_equals_teacher_forcing_and_padding_changes_nothing(
    attention: str, feeding: bool, cell: str
) -> None:
    torch.manual_seed(0)
    model = tiny_model(attention, feeding, cell)
    src, lengths, tgt_in = toy_batch()
    forced = torch.log_softmax(model(src, lengths, tgt_in), -1)
    state = model.encode(src, lengths)
    steps = []
    for t in range(tgt_in.shape[1]):
        lp, state = model.step(tgt_in[:, t], state)
        steps.append(lp)
    assert torch.allclose(torch.stack(steps, 1), forced, atol=1e-12, rtol=0)
    alone = torch.log_softmax(model(src[1:2, :4], lengths[1:2], tgt_in[1:2]), -1)
    assert torch.allclose(alone, forced[1:2], atol=1e-12, rtol=0)
    # the padding really is ignored: other ids there change nothing
    noisy = src.clone()
    noisy[1, 4:] = 5
    assert torch.allclose(torch.log_softmax(model(noisy, lengths, tgt_in), -1), forced)


def test_attention_weights_sum_to_one_over_real_source_steps() -> None:
    torch.manual_seed(0)
    model = tiny_model("bahdanau", True, "gru")
    src, lengths, tgt_in = toy_batch()
    w = model.attention_weights(src, lengths, tgt_in)
    assert torch.allclose(w.sum(-1), torch.ones(3, 5, dtype=w.dtype))
    assert float(w[1, :, 4:].abs().sum()) == 0.0 and float(w[2, :, 2:].abs().sum()) == 0.0


def test_a_tiny_translator_learns_and_search_agrees_with_the_model(
    trained: Path, data: dict[str, Path]
) -> None:
    figures = translate.evaluate(trained, data["valid.de"], data["valid.en"], device="cpu")
    assert figures["bleu"] > 70, figures["bleu"]
    assert (
        "case:mixed" in figures["signature_cased"] and "case:lc" in figures["signature_lowercased"]
    )
    beam = translate.evaluate(trained, data["valid.de"], data["valid.en"], beam=4, device="cpu")
    assert beam["bleu"] > 70
    out = translate.translate(trained, ["rot hund katze"], device="cpu")
    assert out[0][0][0] == "cat dog red"
    loaded = rnnkit.load(trained)
    assert isinstance(loaded.model, Seq2Seq) and loaded.task_name == "translate"


def _hyps(task: TranslateTask, model: Seq2Seq, src: list, **kw: object) -> list:
    return task.search(model, src, **kw)  # type: ignore[arg-type]


def test_translations_do_not_depend_on_the_batch(trained: Path, data: dict[str, Path]) -> None:
    loaded = translate.load_translator(trained, device="cpu")
    task, model = loaded.task, loaded.model
    lines = data["valid.de"].read_text(encoding="utf-8").splitlines()[:13]
    src = task.encode_sources(lines)
    for kw in (dict(beam=1), dict(beam=5, n_best=3, alpha=0.6)):
        alone = [_hyps(task, model, [s], **kw)[0] for s in src]
        for size in (2, 5, 13):
            batched = _hyps(task, model, src, batch_size=size, **kw)
            for a, b in zip(alone, batched):
                assert [h.tokens for h in a] == [h.tokens for h in b]
                # a CPU GEMM row is not bitwise the same at every batch size
                assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
        shuffled = list(reversed(src))
        again = list(reversed(_hyps(task, model, shuffled, batch_size=4, **kw)))
        assert [[h.tokens for h in a] for a in again] == [[h.tokens for h in a] for a in alone]


def test_beam_one_is_greedy_and_scores_are_forced_log_probs(trained: Path) -> None:
    loaded = translate.load_translator(trained, device="cpu")
    task, model = loaded.task, loaded.model
    src = task.encode_sources(["rot hund", "zwei katze baum haus", "blau"])
    g = _hyps(task, model, src, beam=1)
    b = _hyps(task, model, src, beam=1, n_best=1, batch_size=1)
    assert [h[0].tokens for h in g] == [h[0].tokens for h in b]
    beams = _hyps(task, model, src, beam=6, n_best=3)
    for s, hyps in zip(src, beams):
        assert len(hyps) == 3 and len({tuple(h.tokens) for h in hyps}) == 3
        for h in hyps:
            assert h.tokens[-1] == model.config.eos_id
            batch = task._make_batch([s], [torch.tensor(h.tokens[:-1]).numpy()])
            lp = model.token_log_probs(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
            assert float(lp.sum()) == pytest.approx(h.score, abs=1e-4)
    # the beam's best is at least as probable as the greedy translation
    for gh, bh in zip(g, beams):
        assert bh[0].score >= gh[0].score - 1e-6


@torch.no_grad()
def test_exhaustive_beam_finds_the_most_probable_translation() -> None:
    torch.manual_seed(3)
    cfg = Seq2SeqConfig(src_vocab_size=6, tgt_vocab_size=6, hidden_size=8, embedding_size=4,
                        attention="general", bidirectional=True, dropout=0.0)  # fmt: skip
    model = Seq2Seq(cfg).double().eval()
    src = torch.tensor([[4, 5, 4]])
    state = model.encode(src, torch.tensor([3]))
    start = torch.tensor([cfg.bos_id])
    best = beam_search(TranslatorDecoder(model), state, start, cfg.eos_id, 4, 200, banned=(0, 1, 2))
    # brute force: every sequence over {4, 5} of length < 4 ended by </s>, or cut at 4
    seqs: list[list[int]] = []
    for n in range(4):
        for k in range(2**n):
            seqs.append([4 + ((k >> i) & 1) for i in range(n)] + [cfg.eos_id])
    seqs += [[4 + ((k >> i) & 1) for i in range(4)] for k in range(16)]

    def log_prob(seq: list[int]) -> float:
        st, prev, total = model.encode(src, torch.tensor([3])), start, 0.0
        for tok in seq:
            lp, st = model.step(prev, st)
            lp = lp.clone()
            lp[:, [0, 1, 2]] = float("-inf")
            total += float(lp[0, tok])
            prev = torch.tensor([tok])
        return total

    truth = max(seqs, key=log_prob)
    assert best[0][0].tokens == truth
    assert best[0][0].score == pytest.approx(log_prob(truth), abs=1e-9)
    g = greedy(TranslatorDecoder(model), model.encode(src, torch.tensor([3])), start, cfg.eos_id, 4,
               banned=(0, 1, 2))  # fmt: skip
    assert log_prob(g[0].tokens) <= log_prob(truth) + 1e-12


def test_resume_is_exact(data: dict[str, Path], tmp_path: Path) -> None:
    kw = dict(attention="bahdanau", epochs=2, batch_size=32, validate_every=7)
    whole = train_run(data, tmp_path / "whole", **kw)
    part = train_run(data, tmp_path / "part", max_steps=9, **kw)
    translate.train(resume=part, threads=1, progress=False)
    a = load_file(whole / "last.safetensors")
    b = load_file(part / "last.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_subword_units(data: dict[str, Path], tmp_path: Path) -> None:
    run = train_run(data, tmp_path / "spm", subwords=30, epochs=1, max_steps=3, lowercase=True)
    assert (run / "src.spm.model").stat().st_size > 0 and (run / "tgt.spm.model").exists()
    loaded = translate.load_translator(run, device="cpu")
    assert loaded.task.source.segmenter.kind == "spm"
    units = loaded.task.target.segmenter.split("Cat Dog")
    assert loaded.task.target.segmenter.join(units) == "cat dog"
    out = translate.translate(run, ["rot hund"], device="cpu")
    assert isinstance(out[0][0][0], str)


def test_cli_train_eval_translate(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    run = tmp_path / "cli"
    code, out, _ = run_main(
        ["translate", "train", data["train.de"], data["train.en"], "--valid", data["valid.de"],
         data["valid.en"], "--out", run, "--hidden", "16", "--embedding-size", "8",
         "--max-steps", "3", "--threads", "1", "--no-progress"], capsys,
    )  # fmt: skip
    assert code == 0 and "best validation: bleu" in out
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "translate" and config["model"]["attention"] == "none"
    code, out, _ = run_main(["translate", "eval", run, data["valid.de"], data["valid.en"],
                             "--format", "json"], capsys)  # fmt: skip
    figures = json.loads(out)
    assert code == 0 and {"bleu_cased", "bleu_lowercased", "chrf", "loss"} <= set(figures)
    src = tmp_path / "in.txt"
    src.write_text("rot hund\nzwei katze\n", encoding="utf-8")
    code, out, _ = run_main(["translate", "translate", run, src, "--beam", "3", "--n-best",
                             "2"], capsys)  # fmt: skip
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4 and lines[0].startswith("0 ||| ")
    assert float(lines[0].split(" ||| ")[2]) >= float(lines[1].split(" ||| ")[2])
    code, _, err = run_main(["translate", "translate", run, src, "--replace-unk"], capsys)
    assert code == 2 and "--replace-unk needs a translator with attention" in err
    assert_one_sentence(err)


def test_unknown_words_are_replaced_by_the_source_words_they_attend_to(tmp_path: Path) -> None:
    """Names seen once each (so <unk> on both sides) are copied through by --replace-unk."""
    rng = random.Random(5)

    def name() -> str:
        return "".join(rng.choice("bcdfgklmnprstvz") for _ in range(6))

    files = {}
    for split, n in (("train", 600), ("valid", 30)):
        src, tgt = [], []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
            words.insert(rng.randint(0, len(words)), name())
            src.append(" ".join(words))
            tgt.append(" ".join(ENGLISH.get(w, w) for w in reversed(words)))
        for side, lines in (("de", src), ("en", tgt)):
            files[f"{split}.{side}"] = tmp_path / f"{split}.{side}"
            files[f"{split}.{side}"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = train_run(files, tmp_path / "run", attention="general", bidirectional=True, epochs=6,
                    lr=1e-2, batch_size=16)  # fmt: skip
    sources = files["valid.de"].read_text(encoding="utf-8").splitlines()
    references = files["valid.en"].read_text(encoding="utf-8").splitlines()
    plain = [h[0][0] for h in translate.translate(run, sources, device="cpu")]
    copied = [h[0][0] for h in translate.translate(run, sources, device="cpu", replace_unk=True)]
    assert sum("<unk>" in line for line in plain) >= 25
    assert not any("<unk>" in line for line in copied)
    names = [next(w for w in line.split() if w not in ENGLISH) for line in sources]
    assert sum(n in c.split() for n, c in zip(names, copied)) >= 27  # 90% of the names
    assert sum(c == r for c, r in zip(copied, references)) >= 18
    # every other word is the plain translation's: only the <unk>s changed
    for p, c in zip(plain, copied):
        assert len(p.split()) == len(c.split())
        assert all(a == b for a, b in zip(p.split(), c.split()) if a != "<unk>")
    figures = translate.evaluate(run, files["valid.de"], files["valid.en"], device="cpu",
                                 replace_unk=True)  # fmt: skip
    assert figures["translations"] == copied and figures["bleu"] > 80


def test_bad_input_is_one_sentence(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    short = tmp_path / "short.en"
    short.write_text("one line\n", encoding="utf-8")
    common = ["--out", tmp_path / "bad", "--threads", "1", "--no-progress"]
    code, _, err = run_main(["translate", "train", data["train.de"], short, "--valid",
                             data["valid.de"], data["valid.en"], *common], capsys)  # fmt: skip
    assert code == 2
    assert_one_sentence(err, str(data["train.de"]), "600", str(short), "1")
    assert not (tmp_path / "bad").exists()
    empty = tmp_path / "empty.de"
    empty.write_text("rot hund\n\nblau\n", encoding="utf-8")
    three = tmp_path / "three.en"
    three.write_text("red dog\nx\nblue\n", encoding="utf-8")
    code, _, err = run_main(["translate", "train", empty, three, "--valid", data["valid.de"],
                             data["valid.en"], *common], capsys)  # fmt: skip
    assert code == 2
    assert_one_sentence(err, str(empty), "line 2", "empty")

    run = train_run(data, tmp_path / "run", max_steps=2, max_length=6)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    long_src = tmp_path / "long.de"
    long_src.write_text("rot\n" + " ".join(["hund"] * 7) + "\n", encoding="utf-8")
    code, _, err = run_main(["translate", "translate", run, long_src], capsys)
    assert code == 2
    assert_one_sentence(err, str(long_src), "line 2", "--max-length 6")
    code, _, err = run_main(["translate", "translate", run, data["valid.de"], "--beam", "0"],
                            capsys)  # fmt: skip
    assert code == 2
    assert_one_sentence(err, "--beam")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    vocab = json.loads((run / "tgt_vocab.json").read_text(encoding="utf-8"))
    vocab["tokens"] = [t for t in vocab["tokens"] if t != "</s>"]
    del vocab["tokens_sha256"]  # as a vocabulary written by hand: its checksum would say so
    (run / "tgt_vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    code, _, err = run_main(["translate", "translate", run, data["valid.de"]], capsys)
    assert code == 2
    assert_one_sentence(err, "tgt_vocab.json", "</s>")


@torch.no_grad()
def test_loss_over_real_positions_equals_cross_entropy_with_padding_ignored() -> None:
    torch.manual_seed(0)
    model = tiny_model("general", True, "gru")
    model.config.label_smoothing = 0.1
    src, lengths, tgt_in = toy_batch()
    tgt_out = torch.roll(tgt_in, -1, 1)
    tgt_out[1, 3:] = 0
    logits = model(src, lengths, tgt_in)
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=0,
        label_smoothing=0.1,
    )  # fmt: skip
    assert float(model.loss(src, lengths, tgt_in, tgt_out)) == pytest.approx(float(expected))


def test_missing_undecodable_and_wrong_run_are_one_sentence(
    data: dict[str, Path], tmp_path: Path, tiny_run: Path, capsys
) -> None:
    common = ["--valid", data["valid.de"], data["valid.en"], "--out", tmp_path / "bad",
              "--threads", "1", "--no-progress"]  # fmt: skip
    missing = tmp_path / "missing.de"
    code, _, err = run_main(["translate", "train", missing, data["train.en"], *common], capsys)
    assert code == 2
    assert_one_sentence(err, str(missing), "does not exist")
    latin = tmp_path / "latin1.de"
    latin.write_bytes("rot hund\ngro\xdfe katze\n".encode("latin-1"))
    two = tmp_path / "two.en"
    two.write_text("red dog\nbig cat\n", encoding="utf-8")
    code, _, err = run_main(["translate", "train", latin, two, *common], capsys)
    assert code == 2
    assert_one_sentence(err, str(latin), "line 2", "UTF-8")
    assert not (tmp_path / "bad").exists()
    code, _, err = run_main(["translate", "translate", tiny_run, data["valid.de"]], capsys)
    assert code == 2
    assert_one_sentence(err, str(tiny_run), "not a translator")
