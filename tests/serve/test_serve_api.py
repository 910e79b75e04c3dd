"""The page's API through Starlette's test client: every endpoint, the numbers against
``rnnkit score`` / ``generate`` / ``classify predict`` / ``tag predict``, and every bad request
as a 4xx JSON answer with a message (never a traceback)."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("starlette", reason="rnnkit serve needs the serve extra")

from starlette.testclient import TestClient

import rnnkit
from helpers import run_main
from rnnkit.serve import Limits, create_app

TEXT = "the cat sees the fish\nshe likes a red ball\nmy friend eats zebra\n"


@pytest.fixture(scope="module")
def client(served: list) -> TestClient:
    return TestClient(create_app(served))


def post(client: TestClient, path: str, body: Any) -> tuple[int, Any]:
    r = client.post(path, json=body)
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r.status_code, r.json()


def refused(client: TestClient, path: str, body: Any, status: int, *fragments: str) -> str:
    code, data = post(client, path, body)
    assert code == status, (code, data)
    assert set(data) == {"error"} and "Traceback" not in data["error"], data
    for f in fragments:
        assert f in data["error"], (f, data["error"])
    return str(data["error"])


# -- what the page shows ---------------------------------------------------------------------


def test_models_lists_every_run_with_its_views(client: TestClient) -> None:
    data = client.get("/api/models").json()
    kinds = {m["name"]: (m["kind"], m["level"]) for m in data["models"]}
    assert kinds == {
        "words": ("lm", "word"),
        "lstm": ("lm", "word"),
        "chars": ("lm", "char"),
        "kn3.arpa": ("ngram", "word"),
        "polarity": ("classify", "word"),
        "chunker": ("tag", "word"),
        "de-en": ("translate", "word"),
        "de-en-fixed": ("translate", "word"),
        "reviews": ("condition", "word"),
    }
    views = {m["name"]: m["views"] for m in data["models"]}
    assert views["de-en"] == ["translate"] and views["reviews"] == ["condition"]
    assert views["lstm"] == ["probabilities", "compare", "hidden", "generate"]
    assert views["kn3.arpa"] == ["probabilities", "compare"]
    assert data["limits"] == Limits().to_dict()


def test_page_and_assets_ship_in_the_package(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    static = Path(rnnkit.__file__).parent / "serve" / "static"
    for f in static.iterdir():  # nothing is fetched from elsewhere at run time
        text = f.read_text(encoding="utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text and "//cdn" not in text


@pytest.mark.parametrize("name", ["words", "lstm", "arpa"])
def test_scores_equal_rnnkit_score(
    client: TestClient,
    runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    """Per-token and sentence log10 probabilities, perplexity and OOVs: rnnkit score's."""
    text_file = tmp_path / "t.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    code, out, err = run_main(
        ["score", runs[name], text_file, "--per-token", "--format", "jsonl", "--device", "cpu"],
        capsys,
    )
    assert code == 0, err
    cli = [json.loads(line) for line in out.splitlines()]
    model = "kn3.arpa" if name == "arpa" else name
    status, page = post(client, "/api/score", {"model": model, "text": TEXT, "top_k": 3})
    assert status == 200, page
    assert len(page["sentences"]) == len(cli) == 3
    for mine, theirs in zip(page["sentences"], cli):
        assert mine["text"] == theirs["text"] and mine["tokens"] == theirs["tokens"]
        assert mine["oovs"] == theirs["oovs"]
        assert mine["log10_prob"] == pytest.approx(theirs["log10_prob"], abs=1e-9)
        for a, b in zip(mine["per_token"], theirs["per_token"], strict=True):
            assert (a["token"], a["oov"]) == (b["token"], b["oov"])
            assert a["log10_prob"] == pytest.approx(b["log10_prob"], abs=1e-9)
            assert a["prob"] == pytest.approx(10 ** b["log10_prob"])
    api = rnnkit.score(runs[name], text_file, device="cpu")
    s = page["summary"]
    assert s["log10_prob"] == pytest.approx(api.total_log10, abs=1e-9)
    assert s["perplexity"] == pytest.approx(api.perplexity, rel=1e-9)
    assert s["perplexity_excl_oov"] == pytest.approx(api.perplexity_excl_oov, rel=1e-9)
    assert (s["tokens"], s["oovs"], s["sentences"]) == (api.num_tokens, api.num_oov, 3)
    assert f"perplexity {s['perplexity']:.3f} including OOVs" in err  # the CLI's totals


def test_alternatives_are_the_models_top_k(client: TestClient, runs: dict[str, Path]) -> None:
    status, page = post(client, "/api/score", {"model": "lstm", "text": "the cat", "top_k": 4})
    assert status == 200
    toks = page["sentences"][0]["per_token"]
    assert [t["token"] for t in toks] == ["the", "cat", "</s>"]
    run = rnnkit.load(runs["lstm"])
    v = run.vocab
    with torch.no_grad():
        logits, _ = run.model(torch.tensor([[v.eos_id, v.id("the"), v.id("cat")]]))
    probs = torch.softmax(logits[0].double(), -1)
    for t, row in zip(toks, probs):
        top = torch.topk(row, 4)
        assert [a["token"] for a in t["alternatives"]] == [v.tokens[i] for i in top.indices]
        np.testing.assert_allclose([a["prob"] for a in t["alternatives"]], top.values, rtol=1e-5)
        assert t["alternatives"][0]["prob"] >= t["prob"] * (1 - 1e-9)  # nothing beats the top
    _, none = post(client, "/api/score", {"model": "lstm", "text": "the cat", "top_k": 0})
    assert none["sentences"][0]["per_token"][0]["alternatives"] is None


def test_character_runs_score_every_character(client: TestClient, runs: dict[str, Path]) -> None:
    text = "the cat\nsees"
    status, page = post(client, "/api/score", {"model": "chars", "text": text})
    assert status == 200 and page["level"] == "char"
    toks = page["sentences"][0]["per_token"]
    assert "".join(t["token"] for t in toks) == text
    run = rnnkit.load(runs["chars"])
    ids = [run.vocab.index["\n"], *(run.vocab.id(c) for c in text)]
    with torch.no_grad():
        logp, _ = run.model.log_prob(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]))
    expect = logp[0].double().numpy() / math.log(10)
    np.testing.assert_allclose([t["log10_prob"] for t in toks], expect, atol=1e-6)
    assert page["summary"]["log10_prob"] == pytest.approx(expect.sum(), abs=1e-5)
    assert page["summary"]["tokens"] == len(text)


def test_compare_gives_each_tokens_difference(client: TestClient) -> None:
    status, data = post(client, "/api/compare", {"a": "words", "b": "kn3.arpa", "text": TEXT})
    assert status == 200 and data["aligned"]
    ta = [t for s in data["a"]["sentences"] for t in s["per_token"]]
    tb = [t for s in data["b"]["sentences"] for t in s["per_token"]]
    assert len(data["diff"]) == len(ta) == len(tb) == 17
    for d, a, b in zip(data["diff"], ta, tb):
        assert d == pytest.approx(a["log10_prob"] - b["log10_prob"])
    assert data["a_better"] + data["b_better"] <= len(ta)
    refused(client, "/api/compare", {"a": "words", "b": "chars", "text": "x"}, 400, "same units")


@pytest.mark.parametrize("name", ["lstm", "chars", "words"])
def test_hidden_units_follow_the_model(
    client: TestClient, runs: dict[str, Path], name: str
) -> None:
    """The stepped activations are the fused model's; gates in range; ranking as asked."""
    text = "the cat sees\nshe eats it" if name != "chars" else "the cat"
    status, data = post(client, "/api/hidden", {"model": name, "text": text, "count": 5})
    assert status == 200, data
    run = rnnkit.load(runs[name])
    v = run.vocab
    tokens = data["tokens"]
    start = v.index["\n"] if v.level == "char" else (v.bos_id if v.bos_id is not None else v.eos_id)
    ids = [start, *(v.id(t) for t in tokens)]
    with torch.no_grad():
        h, _ = run.model.features(torch.tensor([ids]))
    top = h[0, 1:].double().numpy()  # the top layer, after each shown token
    assert data["layer"] == data["num_layers"] - 1
    acts = np.array(data["activations"])  # (units, T)
    np.testing.assert_allclose(acts, top[:, data["units"]].T, atol=1e-5)
    var = top.var(0)
    assert data["units"] == list(np.argsort(-var, kind="stable")[:5])
    expected_gates = {"lstm": "ifgoc", "gru": "rzn", "rnn": "z"}[data["cell"]]
    assert sorted(data["gates"]) == sorted(expected_gates)
    for g, rows in data["gates"].items():
        arr = np.array(rows)
        assert arr.shape == acts.shape
        if g in "ifor" or (g == "z" and data["cell"] == "gru"):
            assert (arr >= 0).all() and (arr <= 1).all()
    assert len(data["saturation"]) == len(tokens)
    assert 0 <= data["saturated_fraction"] <= 1


def test_hidden_units_rank_by_correlation_and_take_chosen_units(client: TestClient) -> None:
    text = "the cat sees the fish"
    marks = [1, 0, 0, 1, 0, 0]  # the two "the"s (and </s> is token 5)
    body = {"model": "lstm", "text": text, "rank": "correlation", "pattern": marks, "count": 3}
    status, data = post(client, "/api/hidden", body)
    assert status == 200, data
    r = np.abs(data["correlation"])
    assert list(r) == sorted(r, reverse=True)
    status, data = post(client, "/api/hidden", {"model": "lstm", "text": text, "units": [2, 7],
                                                "layer": 0})  # fmt: skip
    assert status == 200 and data["units"] == [2, 7] and data["layer"] == 0


def test_generation_streams_the_tokens_rnnkit_generate_draws(
    client: TestClient, runs: dict[str, Path]
) -> None:
    for name, prompt, extra in [
        ("chars", "the ", {"temperature": 0.8, "top_k": 5}),
        ("lstm", "the cat", {"top_p": 0.9}),
        ("chars", "", {}),
    ]:
        body = {"model": name, "prompt": prompt, "max_new_tokens": 25, "seed": 4, **extra}
        with client.stream("POST", "/api/generate", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = parse_sse(r.read().decode("utf-8"))
        assert events[-1] == ("done", {"done": True, "tokens": 25})
        pieces = [d["text"] for e, d in events if e == "token"]
        assert len(pieces) == 25
        expect = rnnkit.generate(runs[name], prompt, max_new_tokens=25, seed=4, device="cpu",
                                 **extra)[0]  # fmt: skip
        got = "".join(pieces)
        assert got == expect if name == "chars" else got.split() == expect.split()


def parse_sse(text: str) -> list[tuple[str, Any]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_classifier_prediction_and_evidence(client: TestClient, runs: dict[str, Path]) -> None:
    from rnnkit.api import classify

    text = "a truly good film"
    status, data = post(client, "/api/classify", {"model": "polarity", "text": text})
    assert status == 200, data
    labels, probs = classify.predict(runs["polarity"], [text], device="cpu")
    assert data["label"] == labels[0]
    np.testing.assert_allclose(data["probabilities"], probs[0], rtol=1e-6)
    assert data["tokens"] == text.split()
    prefix = np.array(data["prefix_probabilities"])
    assert prefix.shape == (4, 2)
    np.testing.assert_allclose(prefix[-1], probs[0], rtol=1e-5)  # the whole text is a prefix
    for i in range(1, 4):
        _, p = classify.predict(runs["polarity"], [" ".join(text.split()[: i + 1])], device="cpu")
        np.testing.assert_allclose(prefix[i], p[0], rtol=1e-5)
    assert data["pooling"] == "max" and sum(data["pooling_share"]) == pytest.approx(1.0)


def test_tagger_labels_equal_tag_predict(
    client: TestClient, runs: dict[str, Path], tmp_path: Path
) -> None:
    from rnnkit.api import tag

    text = "the|DT big|JJ dog|NN sees|VBZ a|DT cat|NN .|.\na|DT man|NN likes|VBZ"
    status, data = post(client, "/api/tag", {"model": "chunker", "text": text})
    assert status == 200, data
    col = tmp_path / "in.txt"
    col.write_text(
        "\n\n".join(
            "\n".join(" ".join(tok.split("|")) for tok in line.split()) for line in text.split("\n")
        )
        + "\n",
        encoding="utf-8",
    )
    expect = tag.predict(runs["chunker"], col, device="cpu")
    assert [(s["words"], s["labels"]) for s in data["sentences"]] == expect
    for s in data["sentences"]:
        assert all(0 < c <= 1 for c in s["confidence"])


# -- limits and bad requests -----------------------------------------------------------------


def test_every_bad_request_is_a_4xx_with_a_sentence(client: TestClient) -> None:
    score = "/api/score"
    refused(client, score, {"model": "nope", "text": "x"}, 404, "no model 'nope'", "words")
    refused(client, score, {"text": "x"}, 400, "'model' is required")
    refused(client, score, {"model": "words"}, 400, "'text' is required")
    refused(client, score, {"model": "words", "text": 3}, 400, "must be a string")
    refused(client, score, {"model": "words", "text": "x", "top_k": 99}, 400, "top_k", "0 to 20")
    refused(client, score, {"model": "words", "text": "x", "top_k": "5"}, 400, "whole number")
    refused(client, score, {"model": "words", "text": "x", "file": "/etc/passwd"}, 400,
            "unknown field 'file'")  # fmt: skip
    refused(client, score, ["model", "words"], 400, "JSON object")
    refused(client, score, {"model": "polarity", "text": "x"}, 400, "not a language model")
    refused(client, score, {"model": "chars", "text": ""}, 400, "empty")
    for bad in (b"{not json", b"\xff\xfe", b""):
        r = client.post(score, content=bad, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.post(score, content=b"model=words", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "JSON" in r.json()["error"]
    r = client.post(score, data={"model": "words", "text": "x"})  # a cross-site form post
    assert r.status_code == 415
    assert client.get(score).status_code == 405 and "GET" in client.get(score).json()["error"]
    assert client.get("/api/nothing").status_code == 404
    assert "error" in client.get("/api/nothing").json()
    hidden = "/api/hidden"
    refused(client, hidden, {"model": "kn3.arpa", "text": "x"}, 400, "no recurrent hidden units")
    refused(client, hidden, {"model": "lstm", "text": "a b", "layer": 5}, 400, "layer", "0 to 1")
    refused(client, hidden, {"model": "lstm", "text": "a b", "rank": "x"}, 400, "rank")
    refused(client, hidden, {"model": "lstm", "text": "a b", "rank": "correlation"}, 400,
            "pattern")  # fmt: skip
    refused(client, hidden, {"model": "lstm", "text": "a b", "units": [99]}, 400, "0 to 15")
    refused(client, hidden, {"model": "lstm", "text": "a b", "units": ["a"]}, 400, "whole numbers")
    refused(client, hidden, {"model": "lstm", "text": "a", "pattern": [1, "x"]}, 400, "numbers")
    refused(client, hidden, {"model": "lstm", "text": " "}, 400, "empty")
    gen = "/api/generate"
    refused(client, gen, {"model": "lstm", "temperature": 0}, 400, "--temperature")
    refused(client, gen, {"model": "lstm", "top_p": 2}, 400, "--top-p")
    refused(client, gen, {"model": "lstm", "top_k": 0}, 400, "--top-k")
    refused(client, gen, {"model": "lstm", "temperature": "hot"}, 400, "must be a number")
    refused(client, gen, {"model": "lstm", "prompt": "the zebra"}, 400, "'zebra'", "never saw")
    refused(client, gen, {"model": "lstm", "max_new_tokens": 0}, 400, "max_new_tokens")
    refused(client, gen, {"model": "kn3.arpa"}, 400, "RNN LM")
    refused(client, gen, {"model": "lstm", "seed": -1}, 400, "seed")
    refused(client, "/api/classify", {"model": "lstm", "text": "x"}, 400, "not a classifier")
    refused(client, "/api/classify", {"model": "polarity", "text": "  "}, 400, "no tokens")
    refused(client, "/api/tag", {"model": "chunker", "text": "the|DT cat"}, 400, "line 1",
            "'cat'", "word|feature")  # fmt: skip
    refused(client, "/api/tag", {"model": "words", "text": "x"}, 400, "not a tagger")
    refused(client, "/api/tag", {"model": "chunker", "text": "\n \n"}, 400, "empty")


def test_limits_are_4xx_with_the_limit_named(served: list) -> None:
    lim = Limits(max_body_bytes=2000, max_text_chars=300, max_lines=3, max_tokens=20,
                 max_units=4, max_classify_tokens=5, max_prompt_chars=10, max_new_tokens=30,
                 max_streams=1)  # fmt: skip
    c = TestClient(create_app(served, lim))
    refused(c, "/api/score", {"model": "words", "text": "x" * 2500}, 413, "bytes", "2,000")
    r = c.post("/api/score", content=b"{}", headers={"content-type": "application/json",
                                                     "content-length": "999999"})  # fmt: skip
    assert r.status_code == 413
    refused(c, "/api/score", {"model": "words", "text": "a " * 160}, 413, "characters", "300")
    refused(c, "/api/score", {"model": "words", "text": "a\nb\nc\nd"}, 413, "lines", "3")
    refused(c, "/api/score", {"model": "kn3.arpa", "text": "a " * 25}, 413, "tokens", "20")
    refused(c, "/api/score", {"model": "chars", "text": "a" * 25}, 413, "characters", "20")
    refused(c, "/api/hidden", {"model": "lstm", "text": "a", "units": [0, 1, 2, 3, 4]}, 413,
            "limit is 4")  # fmt: skip
    refused(c, "/api/hidden", {"model": "lstm", "text": "a", "count": 9}, 400, "1 to 4")
    refused(c, "/api/classify", {"model": "polarity", "text": "a b c d e f"}, 413, "5")
    refused(c, "/api/generate", {"model": "chars", "prompt": "the cat sees"}, 413, "prompt", "10")
    refused(c, "/api/generate", {"model": "chars", "max_new_tokens": 31}, 413, "1 to 30")
    status, _ = post(c, "/api/score", {"model": "words", "text": "the cat\nshe eats\nhe sees"})
    assert status == 200  # at the limits, not past them


def test_one_generation_at_a_time_past_the_stream_limit(served: list) -> None:
    app = create_app(served, Limits(max_streams=1))
    c = TestClient(app)
    body = {"model": "chars", "max_new_tokens": 5, "seed": 1}
    with c.stream("POST", "/api/generate", json=body) as first:
        assert first.status_code == 200
        second = c.post("/api/generate", json=body)
        assert second.status_code == 429 and "already" in second.json()["error"]
        first.read()
    assert c.post("/api/generate", json=body).status_code == 200  # released when done


def test_a_server_failure_is_a_json_500_without_details(
    served: list, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import rnnkit.serve.app as app_module

    def boom(*args: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app_module, "score_text", boom)
    c = TestClient(create_app(served))
    code, data = post(c, "/api/score", {"model": "words", "text": "x"})
    assert code == 500 and "secret" not in data["error"] and "Traceback" not in data["error"]
    assert "secret internal detail" in caplog.text  # the server's log has it


def test_other_hosts_are_refused_when_bound_to_loopback(served: list) -> None:
    c = TestClient(create_app(served, allowed_hosts=["127.0.0.1", "localhost"]))
    assert c.get("/api/models", headers={"host": "evil.example"}).status_code == 400
    assert c.get("/api/models", headers={"host": "127.0.0.1:8000"}).status_code == 200


def test_concurrent_requests_do_not_mix(client: TestClient) -> None:
    """Many requests at once, on the same and on different models: each gets its own answer."""
    texts = ["the cat sees the fish", "she likes it", "my friend holds a red ball", "he eats"]
    bodies = [("/api/score", {"model": m, "text": t}) for m in ("words", "lstm") for t in texts]
    bodies += [("/api/hidden", {"model": "lstm", "text": t, "count": 3}) for t in texts]
    alone = [client.post(p, json=b).json() for p, b in bodies]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda pb: client.post(pb[0], json=pb[1]).json(), bodies * 3))
    for i, got in enumerate(together):
        assert got == alone[i % len(bodies)]
