"""The page end to end in a real headless browser: Debian's chromium driven by Playwright
(``executable_path`` set to it: Playwright never downloads a browser here).

Where no chromium can be found these tests skip with the reason; on CI (``CI=true``, where
``.ci/run`` installs it) they fail instead. ``RNNKIT_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnkit

ON_CI = os.environ.get("CI", "").lower() == "true"
PNG = b"\x89PNG\r\n\x1a\n"
TEXT = "the cat sees the fish\nshe likes a red ball"


def _no_browser(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"CI must run the browser tests, but {reason} (.ci/run installs chromium)")
    pytest.skip(reason)


def find_chromium() -> str:
    for name in (os.environ.get("RNNKIT_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    _no_browser("no chromium on PATH (apt-get install chromium, or set RNNKIT_CHROMIUM)")
    raise AssertionError  # not reached


@pytest.fixture(scope="module")
def server(served: list) -> Iterator[str]:
    """The app on a free loopback port, served by uvicorn in a thread."""
    try:
        import uvicorn

        from rnnkit.serve import create_app
    except ImportError as exc:
        _no_browser(f"the serve extra is missing ({exc.name})")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(served, allowed_hosts=["127.0.0.1", "localhost"])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    executable = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("playwright is not installed (pip install playwright; no browser download)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    pg = browser.new_page(viewport={"width": 1100, "height": 800})
    pg.set_default_timeout(15_000)
    pg.goto(server + "/")
    pg.wait_for_function("document.querySelectorAll('#model option').length > 0")
    yield pg
    pg.close()


def blank_size(browser: Any, tmp_path: Path) -> int:
    pg = browser.new_page(viewport={"width": 1100, "height": 800})
    pg.set_content("<html><body></body></html>")
    path = tmp_path / "blank.png"
    pg.screenshot(path=str(path))
    pg.close()
    return path.stat().st_size


def shot(page: Any, path: Path, floor: int) -> None:
    page.screenshot(path=str(path))
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > floor + 2000, (path, len(data), floor)


def analyse(page: Any, model: str, view: str, text: str) -> None:
    page.select_option("#model", model)
    page.click(f"#tabs button[data-view={view}]")
    ready = page.evaluate("document.body.dataset.ready || ''")
    page.fill("#text", text)
    page.click("#go")
    page.wait_for_function(f"(document.body.dataset.ready || '') !== '{ready}'")
    assert page.inner_text("#error") == "" or not page.is_visible("#error")


def test_tokens_coloured_alternatives_and_models_switched(
    page: Any, browser: Any, runs: dict[str, Path], tmp_path: Path
) -> None:
    floor = blank_size(browser, tmp_path)
    analyse(page, "words", "probabilities", TEXT)
    toks = page.locator("#tokens .tok")
    api = rnnkit.score(runs["words"], sentences=TEXT.split("\n"), device="cpu")
    expected = [r["token"] for rec in api.records(per_token=True) for r in rec["per_token"]]
    assert toks.count() == len(expected) == 12
    shown = toks.all_inner_texts()
    assert shown == [("\u23ce" if t == "</s>" else t) for t in expected]
    probs = [float(p) for p in toks.evaluate_all("els => els.map(e => e.dataset.prob)")]
    want = [10 ** r["log10_prob"] for rec in api.records(per_token=True) for r in rec["per_token"]]
    assert probs == pytest.approx(want, rel=1e-9)
    colours = toks.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert all(c.startswith("rgb(") for c in colours) and len(set(colours)) > 1
    log10 = page.inner_text("#summary b[data-field='log10 P']")
    assert log10 == f"{api.total_log10:.4f}"
    assert page.inner_text("#summary b[data-field='perplexity']") == f"{api.perplexity:.3f}"
    assert page.locator("#surprisal svg circle").count() == 12
    # hover a token: its alternatives; hover one of them
    toks.nth(1).hover()
    alts = page.locator("#alts .alt")
    assert alts.count() == 5
    assert page.inner_text("#alts h4").startswith("cat:")
    alts.nth(0).hover()
    bg = alts.nth(0).evaluate("e => getComputedStyle(e).backgroundColor")
    assert bg != "rgba(0, 0, 0, 0)"  # highlighted under the pointer
    assert "%" in alts.nth(0).inner_text()
    assert toks.first.is_visible()
    shot(page, tmp_path / "probabilities.png", floor)
    # switch models: the same text by characters
    page.select_option("#model", "chars")
    page.wait_for_function(f"document.querySelectorAll('#tokens .tok').length === {len(TEXT)}")
    chars = "".join(toks.all_inner_texts())  # newlines and spaces shown as signs
    assert chars.replace("\u23ce", "\n").replace("\u2423", " ") == TEXT
    assert page.is_visible("#tabs button[data-view=hidden]")
    page.select_option("#model", "kn3.arpa")
    page.wait_for_function("document.querySelectorAll('#tokens .tok').length === 12")
    assert not page.is_visible("#tabs button[data-view=hidden]")  # an n-gram has no units
    toks.nth(2).click()
    assert "no alternatives" in page.inner_text("#alts")
    shot(page, tmp_path / "ngram.png", floor)


def test_compare_hidden_and_generate(
    page: Any, browser: Any, runs: dict[str, Path], tmp_path: Path
) -> None:
    floor = blank_size(browser, tmp_path)
    page.select_option("#model", "words")
    page.click("#tabs button[data-view=compare]")
    page.select_option("#model-b", "kn3.arpa")
    analyse(page, "words", "compare", TEXT)
    cmp = page.locator("#cmp-tokens .tok")
    assert cmp.count() == 12
    diffs = cmp.evaluate_all("els => els.map(e => Number(e.dataset.diff))")
    a = rnnkit.score(runs["words"], sentences=TEXT.split("\n"), device="cpu").scores.token_log10
    b = rnnkit.score(runs["arpa"], sentences=TEXT.split("\n")).scores.token_log10
    assert diffs == pytest.approx(list(a - b), abs=1e-9)
    assert page.locator("#cmp-plot polyline").count() == 2
    shot(page, tmp_path / "compare.png", floor)

    analyse(page, "lstm", "hidden", TEXT)
    rows = page.locator("#heatmap .hm-row")
    assert rows.count() == 1 + 16 + 1  # tokens, 16 units, saturation
    assert page.locator("#heatmap .hm-tok").count() == 12  # 10 words and two </s>
    assert page.inner_text("#saturated").endswith("%")
    page.select_option("#gate", "f")  # the forget gate
    page.wait_for_function(
        "document.querySelector('#heatmap .hm-label').textContent.includes('forget')"
    )
    page.locator("#heatmap .hm-tok").nth(0).click()  # mark "the"s, rank by correlation
    page.locator("#heatmap .hm-tok").nth(3).click()
    ready = page.evaluate("document.body.dataset.ready")
    page.select_option("#rank", "correlation")
    page.wait_for_function(f"document.body.dataset.ready !== '{ready}'")
    assert "r " in page.locator("#heatmap .hm-label").nth(1).inner_text()
    shot(page, tmp_path / "hidden.png", floor)

    page.select_option("#model", "chars")
    page.click("#tabs button[data-view=generate]")
    page.fill("#prompt", "the ")
    page.fill("#seed", "3")
    page.fill("#max-new", "30")
    page.fill("#temperature", "0.7")
    page.click("#generate")
    page.wait_for_function("document.body.dataset.generated === '30'")
    expect = rnnkit.generate(runs["chars"], "the ", max_new_tokens=30, seed=3, temperature=0.7,
                             device="cpu")[0]  # fmt: skip
    assert page.inner_text("#gen-output") == "the " + expect
    assert page.locator("#gen-output .gen-tok").count() == 30
    shot(page, tmp_path / "generate.png", floor)


def test_classifier_and_tagger_views(
    page: Any, browser: Any, runs: dict[str, Path], tmp_path: Path
) -> None:
    from rnnkit.api import classify

    floor = blank_size(browser, tmp_path)
    analyse(page, "polarity", "classify", "a truly good film")
    labels, _ = classify.predict(runs["polarity"], ["a truly good film"], device="cpu")
    assert page.inner_text("#cls-label") == labels[0]
    assert page.locator("#cls-tokens .tok").all_inner_texts() == ["a", "truly", "good", "film"]
    shot(page, tmp_path / "classify.png", floor)
    analyse(page, "chunker", "tag", "the|DT big|JJ dog|NN sees|VBZ a|DT cat|NN")
    labels_shown = page.locator("#tag-output .label").all_inner_texts()
    assert len(labels_shown) == 6 and all(
        lab in {"B-NP", "I-NP", "B-VP", "O"} for lab in labels_shown
    )
    shot(page, tmp_path / "tag.png", floor)
    page.fill("#text", "the cat")  # a tagger that reads a POS column: the page says so
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    assert "word|feature" in page.inner_text("#error")


def test_translate_with_its_attention_heat_map_and_generate_from_a_label(
    page: Any, browser: Any, runs: dict[str, Path], tmp_path: Path
) -> None:
    from rnnkit.api import condition, translate

    floor = blank_size(browser, tmp_path)
    source = "katze blau haus"
    analyse(page, "de-en", "translate", source)  # greedy
    best = translate.translate(runs["de-en"], [source], device="cpu")[0][0][0]
    assert page.inner_text("#tr-best") == best
    units = page.locator("#tr-tgt .tok").all_inner_texts()
    assert units == [*best.split(), "</s>"]
    assert page.locator("#tr-src .tok").all_inner_texts() == source.split()
    heat = page.locator("#tr-heatmap table.attn")
    assert heat.locator("thead th.src").all_inner_texts() == source.split()  # columns
    assert heat.locator("tbody th.row").all_inner_texts() == units  # rows
    cells = heat.locator("td.attn-cell")
    assert cells.count() == len(units) * 3
    weights = np.array(cells.evaluate_all("els => els.map(e => Number(e.dataset.weight))"))
    np.testing.assert_allclose(weights.reshape(len(units), 3).sum(1), 1.0, atol=1e-5)
    colours = cells.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert len(set(colours)) > 1
    # beam search: the n-best list, and another hypothesis's matrix on click
    page.select_option("#tr-search", "beam")
    page.wait_for_function("document.querySelectorAll('#tr-nbest-list tr.hyp').length === 3")
    nbest = translate.translate(runs["de-en"], [source], beam=5, n_best=3, alpha=0.6,
                                device="cpu")[0]  # fmt: skip
    rows = page.locator("#tr-nbest-list tr.hyp")
    assert rows.locator(".hyp-text").all_inner_texts() == [t for t, _ in nbest]
    rows.nth(1).click()
    second = nbest[1][0].split()
    assert heat.locator("tbody th.row").all_inner_texts()[: len(second)] == second
    assert "chosen" in (rows.nth(1).get_attribute("class") or "")
    rows.nth(0).click()
    shot(page, tmp_path / "translate.png", floor)
    # the fixed-vector model: a note, no matrix
    page.select_option("#model", "de-en-fixed")
    # (wait for what is drawn: the typing's debounced request may land in between)
    page.wait_for_function("document.querySelector('#tr-note').textContent.includes('vector c')")
    assert page.locator("#tr-heatmap td").count() == 0
    assert page.inner_text("#tr-best") != ""
    # a generator conditioned on labels: pick one, generate greedily
    page.select_option("#model", "reviews")
    assert page.is_visible("#view-condition") and not page.is_visible("#text")
    page.select_option("#cond-label", "pos")
    page.select_option("#cond-search", "greedy")
    assert not page.is_visible("#cond-temperature")
    page.click("#cond-go")
    page.wait_for_function("document.body.dataset.conditioned === '1'")
    want = condition.generate(runs["reviews"], "pos", greedy=True, device="cpu")
    assert page.locator("#cond-output .cond-text").all_inner_texts() == want
    shot(page, tmp_path / "condition.png", floor)
