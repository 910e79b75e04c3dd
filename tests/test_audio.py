"""Audio features: frames of the right shape, bad files named, other sample rates resampled
(or refused when asked), labels from names or a manifest, the fsdd split, normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("soundfile")
pytest.importorskip("librosa")

import soundfile as sf

from rnnkit.audio import (
    AudioFeatures,
    list_folder,
    read_manifest,
    read_wav,
    split_fsdd,
)
from rnnkit.errors import ConfigError, DataError


def tone(path: Path, seconds: float = 0.3, rate: int = 8000, freq: float = 440.0) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * freq * t), rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize(("kind", "size"), [("mfcc", 20), ("logmel", 40)])
def test_features_are_frames_every_10_ms(tmp_path: Path, kind: str, size: int) -> None:
    feats = AudioFeatures(kind=kind)
    frames = feats(tone(tmp_path / "0_a_0.wav", seconds=0.3))
    assert frames.dtype == np.float32
    assert frames.shape == (31, size)  # 2400 samples, hop 80, centred: 1 + 2400 // 80
    assert np.isfinite(frames).all()


def test_non_wav_and_unreadable_files_name_the_file(tmp_path: Path) -> None:
    flac = tmp_path / "0_a_1.flac"
    sf.write(str(flac), np.zeros(800), 8000, format="FLAC")
    with pytest.raises(DataError, match="is FLAC, not WAV") as info:
        read_wav(flac, 8000)
    assert str(flac) in str(info.value)
    junk = tmp_path / "0_a_2.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(DataError, match="cannot be read as WAV") as info:
        read_wav(junk, 8000)
    assert str(junk) in str(info.value) and str(info.value).endswith(".")


def test_other_sample_rate_is_resampled_or_refused(tmp_path: Path) -> None:
    wav = tone(tmp_path / "1_b_0.wav", seconds=0.25, rate=16000)
    y = read_wav(wav, 8000)
    assert len(y) == 2000  # resampled to 8 kHz
    assert AudioFeatures()(wav).shape == (26, 20)
    with pytest.raises(DataError, match="16000 Hz, not 8000 Hz"):
        read_wav(wav, 8000, resample=False)


def test_labels_from_names_and_the_fsdd_split(tmp_path: Path) -> None:
    for name in ["3_ann_0.wav", "3_ann_12.wav", "10_bob_4.wav", "7_bob_5.wav"]:
        tone(tmp_path / name, seconds=0.05)
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    items = list_folder(tmp_path)
    assert [(p.name, label) for p, label in items] == [
        ("10_bob_4.wav", "10"),
        ("3_ann_0.wav", "3"),
        ("3_ann_12.wav", "3"),
        ("7_bob_5.wav", "7"),
    ]
    train, test = split_fsdd(items)
    assert sorted(p.name for p, _ in test) == ["10_bob_4.wav", "3_ann_0.wav"]
    assert sorted(p.name for p, _ in train) == ["3_ann_12.wav", "7_bob_5.wav"]
    assert [label for _, label in list_folder(tmp_path, r"_([a-z]+)_")] == [
        "bob",
        "ann",
        "ann",
        "bob",
    ]


def test_empty_folder_and_unlabeled_names_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"holds no \.wav files"):
        list_folder(tmp_path)
    tone(tmp_path / "hello.wav", seconds=0.05)
    with pytest.raises(DataError, match=r"hello\.wav.*no label"):
        list_folder(tmp_path)


def test_manifest_paths_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    tone(tmp_path / "a" / "x.wav", seconds=0.05)
    m = tmp_path / "manifest.tsv"
    m.write_text("a/x.wav\tyes\n\n", encoding="utf-8")
    assert read_manifest(m) == [(tmp_path / "a" / "x.wav", "yes")]
    m.write_text("a/x.wav\tyes\na/y.wav\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is not path<TAB>label"):
        read_manifest(m)


def test_normalisation_uses_training_frames_and_saves_as_json(tmp_path: Path) -> None:
    feats = AudioFeatures(kind="logmel", n_mels=8)
    train = [feats.raw(tone(tmp_path / f"{i}_t_9.wav", 0.1, freq=200 + 300 * i)) for i in range(3)]
    feats.fit(train)
    stacked = np.concatenate([feats.normalize(f) for f in train])
    np.testing.assert_allclose(stacked.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(stacked.std(0), 1, atol=1e-3)
    again = AudioFeatures.from_dict(json.loads(json.dumps(feats.to_dict())))
    assert again == feats and isinstance(again.mean, list)


def test_missing_library_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wav = tone(tmp_path / "0_a_0.wav", seconds=0.05)
    monkeypatch.setitem(__import__("sys").modules, "librosa", None)
    with pytest.raises(ConfigError, match=r"pip install 'rnnkit\[audio\]'\.$"):
        read_wav(wav, 8000)
