"""The translator's and the conditional generator's endpoints through Starlette's test client:
the translations are ``rnnkit.api.translate.translate``'s, the attention rows are where the
model looked (they sum to 1 over the real source units), the fixed-vector model says it has
no attention, generations from a label are ``rnnkit.api.condition.generate``'s, and every bad
request is a 4xx with a sentence."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("starlette", reason="rnnkit serve needs the serve extra")

from starlette.testclient import TestClient

from rnnkit.api import condition, translate
from rnnkit.serve import Limits, create_app

SOURCE = "zwei rot hund"


@pytest.fixture(scope="module")
def client(served: list) -> TestClient:
    return TestClient(create_app(served))


def post(client: TestClient, path: str, body: Any) -> tuple[int, Any]:
    r = client.post(path, json=body)
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r.status_code, r.json()


def refused(client: TestClient, path: str, body: Any, status: int, *fragments: str) -> None:
    code, data = post(client, path, body)
    assert code == status, (code, data)
    assert set(data) == {"error"} and "Traceback" not in data["error"], data
    for f in fragments:
        assert f in data["error"], (f, data["error"])


def test_models_describe_translators_and_generators(client: TestClient) -> None:
    info = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert info["de-en"]["attention"] == "general" and info["de-en"]["bidirectional"]
    assert info["de-en-fixed"]["attention"] == "none"
    assert info["de-en"]["units"] == "words" and info["de-en"]["max_length"] == 100
    assert info["reviews"]["condition_kind"] == "label"
    assert info["reviews"]["labels"] == ["neg", "pos"]


@pytest.mark.parametrize("name", ["de-en", "de-en-fixed"])
@pytest.mark.parametrize("search", [dict(beam=1), dict(beam=3, n_best=3, alpha=0.6)])
def test_translations_equal_rnnkit_translate(
    client: TestClient, runs: dict[str, Path], name: str, search: dict[str, Any]
) -> None:
    status, page = post(client, "/api/translate", {"model": name, "text": SOURCE, **search})
    assert status == 200, page
    api = translate.translate(runs[name], [SOURCE], device="cpu", **search)[0]
    got = [(t["text"], t["log_prob"]) for t in page["translations"]]
    assert [t for t, _ in got] == [t for t, _ in api]
    assert [s for _, s in got] == pytest.approx([s for _, s in api], abs=1e-9)
    assert page["search"] == ("greedy" if search["beam"] == 1 else "beam")
    assert page["source"] == {"text": SOURCE, "units": SOURCE.split(), "unknown": [False] * 3}
    for t in page["translations"]:
        assert t["log10_prob"] == pytest.approx(t["log_prob"] / math.log(10))
        assert " ".join(u for u in t["units"] if u != "</s>") == t["text"]
        assert t["ended"] == (t["units"][-1] == "</s>")
        # each unit's probability from the forced pass: they add up to the search's score
        assert sum(t["unit_log10"]) == pytest.approx(t["log10_prob"], abs=1e-4)
        assert len(t["unit_log10"]) == len(t["units"])


def test_attention_rows_sum_to_one_over_the_source(
    client: TestClient, runs: dict[str, Path]
) -> None:
    text = "katze blau haus baum"
    body = {"model": "de-en", "text": text, "beam": 4, "n_best": 3}
    status, page = post(client, "/api/translate", body)
    assert status == 200, page
    assert page["attention"] == "general" and page["note"] is None
    loaded = translate.load_translator(runs["de-en"], device="cpu")
    task, model = loaded.task, loaded.model
    ids = task.source.encode(text)
    tgt = task.target.vocab
    for t in page["translations"]:
        w = np.array(t["attention"])
        assert w.shape == (len(t["units"]), 4)  # target units (</s> included) x source units
        assert (w >= 0).all()
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
        # the matrix is the model's, from a forced pass: tgt_in = <s> and the units but the last
        out = [tgt.index[u] for u in t["units"]]
        tgt_in = torch.tensor([[tgt.bos_id, *out[:-1]]])
        src = torch.from_numpy(ids)[None]
        expect = model.attention_weights(src, torch.tensor([len(ids)]), tgt_in)[0]
        np.testing.assert_allclose(w, expect.double().numpy(), atol=1e-6)


def test_the_fixed_vector_model_has_a_note_instead(client: TestClient) -> None:
    status, page = post(client, "/api/translate", {"model": "de-en-fixed", "text": SOURCE})
    assert status == 200
    assert page["attention"] is None and page["translations"][0]["attention"] is None
    assert "fixed vector c" in page["note"] and "no attention" in page["note"]


def test_unknown_source_words_are_marked(client: TestClient) -> None:
    status, page = post(client, "/api/translate", {"model": "de-en", "text": "zwei zebra"})
    assert status == 200
    assert page["source"]["unknown"] == [False, True]
    assert len(page["translations"][0]["attention"][0]) == 2


def test_translate_bad_requests(client: TestClient) -> None:
    tr = "/api/translate"
    refused(client, tr, {"model": "de-en", "text": SOURCE, "beam": 0}, 400, "'beam'", "1 to 16")
    refused(client, tr, {"model": "de-en", "text": SOURCE, "beam": 99}, 400, "'beam'", "1 to 16")
    refused(client, tr, {"model": "de-en", "text": SOURCE, "beam": 2, "n_best": 3}, 400,
            "--n-best (3) must not exceed --beam (2)")  # fmt: skip
    refused(client, tr, {"model": "de-en", "text": SOURCE, "alpha": -1}, 400, "--alpha")
    refused(client, tr, {"model": "de-en", "text": SOURCE, "alpha": "x"}, 400, "must be a number")
    refused(client, tr, {"model": "de-en", "text": SOURCE, "beam": 1.5}, 400, "whole number")
    refused(client, tr, {"model": "de-en", "text": SOURCE, "file": "/etc/passwd"}, 400,
            "unknown field 'file'")  # fmt: skip
    refused(client, tr, {"model": "de-en", "text": SOURCE, "top_k": 3}, 400, "unknown field")
    refused(client, tr, {"model": "de-en"}, 400, "'text' is required")
    refused(client, tr, {"model": "de-en", "text": "  \n"}, 400, "empty")
    refused(client, tr, {"model": "de-en", "text": "zwei\nrot"}, 400, "one source sentence")
    refused(client, tr, {"model": "de-en", "text": "x" * 1001}, 413, "1,001 characters", "1,000")
    refused(client, tr, {"model": "de-en", "text": "zwei " * 101}, 413, "101 units",
            "--max-length")  # fmt: skip
    refused(client, tr, {"model": "words", "text": SOURCE}, 400, "not a translator")
    refused(client, tr, {"model": "nope", "text": SOURCE}, 404, "no model 'nope'")
    refused(client, "/api/score", {"model": "de-en", "text": SOURCE}, 400, "not a language model")


def test_generation_from_a_label_equals_rnnkit_condition_generate(
    client: TestClient, runs: dict[str, Path]
) -> None:
    sampled: dict[str, Any] = {
        "label": "pos",
        "num_samples": 4,
        "seed": 7,
        "temperature": 0.8,
        "top_k": 5,
    }
    status, page = post(client, "/api/condition", {"model": "reviews", **sampled})
    assert status == 200, page
    assert page["search"] == "sample" and len(page["outputs"]) == 4
    label = sampled.pop("label")
    api = condition.generate_hypotheses(runs["reviews"], label, device="cpu", **sampled)
    assert [(o["text"], o["log_prob"]) for o in page["outputs"]] == [
        (t, pytest.approx(s, abs=1e-9)) for outs in api for t, s in outs
    ]
    searches: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"greedy": True}, {"greedy": True}),
        ({"beam": 3, "n_best": 2, "alpha": 0.5}, {"beam": 3, "n_best": 2, "alpha": 0.5}),
    ]
    for body, kw in searches:
        status, page = post(client, "/api/condition", {"model": "reviews", "label": "neg", **body})
        assert status == 200, page
        want = condition.generate(runs["reviews"], "neg", device="cpu", **kw)
        assert [o["text"] for o in page["outputs"]] == want


def test_condition_bad_requests(client: TestClient, tmp_path: Path) -> None:
    c = "/api/condition"
    refused(client, c, {"model": "reviews"}, 400, "'label' is required", "neg, pos")
    refused(client, c, {"model": "reviews", "label": "meh"}, 400, "'meh'", "neg, pos")
    refused(client, c, {"model": "reviews", "label": 1}, 400, "must be a string")
    refused(client, c, {"model": "reviews", "label": "pos", "beam": 0}, 400, "'beam'", "1 to 16")
    refused(client, c, {"model": "reviews", "label": "pos", "beam": 2, "temperature": 0.5}, 400,
            "--beam conflicts")  # fmt: skip
    refused(client, c, {"model": "reviews", "label": "pos", "n_best": 2}, 400, "--n-best")
    refused(client, c, {"model": "reviews", "label": "pos", "num_samples": 0}, 400, "1 to 20")
    refused(client, c, {"model": "reviews", "label": "pos", "num_samples": 2, "greedy": True},
            400, "--num-samples")  # fmt: skip
    refused(client, c, {"model": "reviews", "label": "pos", "greedy": "yes"}, 400, "true or false")
    refused(client, c, {"model": "reviews", "label": "pos", "temperature": 0}, 400, "--temperature")
    refused(client, c, {"model": "reviews", "label": "pos", "max_len": 999}, 400, "1 to 200")
    refused(client, c, {"model": "reviews", "label": "pos", "vectors": "x.npy"}, 400,
            "unknown field 'vectors'")  # fmt: skip
    refused(client, c, {"model": "de-en", "label": "pos"}, 400, "not a conditional generator")


def test_a_vector_conditioned_run_is_shown_but_cannot_be_typed(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    from rnnkit.serve import load_models

    rng = np.random.default_rng(0)
    text = tmp_path / "captions.txt"
    text.write_text("a red ball\na big tree\n" * 10, encoding="utf-8")
    np.save(tmp_path / "f.npy", rng.standard_normal((20, 3)).astype(np.float32))
    condition.train([text], tmp_path / "captions", vectors=tmp_path / "f.npy", hidden_size=8,
                    max_steps=2, progress=False, threads=1)  # fmt: skip
    c = TestClient(create_app(load_models([tmp_path / "captions"])))
    (info,) = c.get("/api/models").json()["models"]
    assert info["views"] == ["condition"] and info["condition_kind"] == "vector"
    assert info["vector_size"] == 3 and info["labels"] is None
    refused(c, "/api/condition", {"model": "captions", "label": "x"}, 400, "vectors of 3 values",
            "--vectors")  # fmt: skip


def test_limits_of_translation_and_generation(served: list) -> None:
    lim = Limits(max_source_chars=20, max_beam=4, max_samples=3, max_output_tokens=10)
    c = TestClient(create_app(served, lim))
    refused(c, "/api/translate", {"model": "de-en", "text": "zwei " * 5}, 413, "25", "20")
    refused(c, "/api/translate", {"model": "de-en", "text": SOURCE, "beam": 5}, 400, "1 to 4")
    refused(c, "/api/condition", {"model": "reviews", "label": "pos", "num_samples": 4}, 400,
            "1 to 3")  # fmt: skip
    refused(c, "/api/condition", {"model": "reviews", "label": "pos", "max_len": 11}, 400,
            "1 to 10")  # fmt: skip
    status, page = post(c, "/api/translate", {"model": "de-en", "text": SOURCE, "beam": 4,
                                              "n_best": 4})  # fmt: skip
    assert status == 200 and len(page["translations"]) == 4  # at the limits, not past them
    status, page = post(c, "/api/condition", {"model": "reviews", "label": "pos", "seed": 1})
    assert status == 200 and page["max_len"] <= 10


def test_concurrent_translations_do_not_mix(client: TestClient) -> None:
    texts = ["zwei rot hund", "katze blau", "haus baum gross klein", "drei katze"]
    bodies = [("/api/translate", {"model": m, "text": t, "beam": 2, "n_best": 2})
              for m in ("de-en", "de-en-fixed") for t in texts]  # fmt: skip
    bodies.append(("/api/condition", {"model": "reviews", "label": "pos", "greedy": True}))
    alone = [client.post(p, json=b).json() for p, b in bodies]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda pb: client.post(pb[0], json=pb[1]).json(), bodies * 3))
    for i, got in enumerate(together):
        assert got == alone[i % len(bodies)]
