"""
Tests of character-level text data (pyprobvae.text): the fixed vocabulary,
encoding and decoding, the built-in corpus and the text loader.
"""

import pytest
import torch

from pyprobvae.data import DataError, Dataset
from pyprobvae.data.text import (
    CORPUS_MAX_CHARS,
    REPLACEMENT,
    VOCABULARY,
    decode_text,
    default_corpus,
    encode_text,
    load_text,
    read_text_file,
)


def test_vocabulary_is_newline_and_printable_ascii():
    assert len(VOCABULARY) == 96 and len(set(VOCABULARY)) == 96
    assert VOCABULARY[0] == "\n" and VOCABULARY[1] == " " and VOCABULARY[-1] == "~"
    assert REPLACEMENT in VOCABULARY


def test_default_corpus_is_deterministic_and_sizeable():
    corpus = default_corpus()
    assert corpus == default_corpus()
    assert 100_000 < len(corpus) <= CORPUS_MAX_CHARS
    assert corpus.startswith("A collection of string constants.")  # string's module docstring
    assert "Remove any common leading whitespace" in corpus  # textwrap.dedent


def test_encode_decode_round_trip():
    text = 'def f(x):\n    return {"a": [1, 2]}  # ~!\n\n'
    ids = encode_text(text)
    assert ids.dtype == torch.int64 and ids.shape == (len(text),)
    assert ids[4] == VOCABULARY.index("f") and ids[9] == VOCABULARY.index("\n") == 0
    assert decode_text(ids) == text
    assert decode_text(ids.tolist()) == text
    assert decode_text(torch.stack([ids[:5], ids[5:10]])) == [text[:5], text[5:10]]
    assert decode_text(torch.zeros(0, dtype=torch.int64)) == ""


def test_encode_replaces_characters_outside_the_vocabulary():
    ids = encode_text("a\r\nb\rc\td\u00a0e\u00dff\u2500")
    assert decode_text(ids) == "a\nb\nc d e?f?"
    # a custom vocabulary without a space maps whitespace to the replacement
    assert decode_text(encode_text("ab\tba", "ab?"), "ab?") == "ab?ba"
    with pytest.raises(ValueError, match="lacks '\\?'"):
        encode_text("ab", "ab")
    with pytest.raises(ValueError, match="repeats characters"):
        encode_text("ab", "aab?")


def test_decode_errors():
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 95\].*got ids in \[0, 96\]"):
        decode_text(torch.tensor([0, 96]))
    with pytest.raises(ValueError, match=r"shape \(seq_len,\) or \(batch, seq_len\)"):
        decode_text(torch.zeros(2, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="integers"):
        decode_text(torch.zeros(3))


def test_load_text_default_corpus_splits():
    train, test = load_text(None, "train", seq_len=64), load_text(None, "test", seq_len=64)
    count = len(default_corpus()) // 64
    assert len(train) + len(test) == count
    assert len(train) == (9 * count) // 10
    for data in (train, test):
        assert data.name == "text" and data.x.dtype == torch.int64
        assert data.x.shape[1:] == (64,) and data.data_shape == (64,)
        assert data.y is None and data.num_classes is None
        assert data.vocabulary == VOCABULARY and data.num_levels == 96
    # together the splits hold every 64-character chunk of the corpus exactly once
    normalized = decode_text(encode_text(default_corpus()))
    chunks = [normalized[i * 64 : (i + 1) * 64] for i in range(count)]
    assert sorted(decode_text(train.x) + decode_text(test.x)) == sorted(chunks)
    again = load_text(None, "test", seq_len=64)
    assert torch.equal(again.x, test.x)
    assert load_text(None, "test").data_shape == (128,)  # DEFAULT_SEQ_LEN


def _write(path, content):
    path.write_bytes(content)
    return str(path)


def test_load_text_file_and_sequence_length(tmp_path):
    chunks = [f"line {i:010d}\n" for i in range(100)]  # 16 distinct characters each
    text = "".join(chunks) + "tail"
    path = _write(tmp_path / "lines.txt", text.encode("utf-8"))
    train, test = load_text(path, "train", seq_len=16), load_text(path, "test", seq_len=16)
    assert (len(train), len(test)) == (90, 10)
    assert train.name == path and train.x.shape == (90, 16) and train.data_shape == (16,)
    train_rows, test_rows = decode_text(train.x), decode_text(test.x)
    assert sorted(train_rows + test_rows) == chunks  # disjoint, complete, the tail dropped
    positions = [chunks.index(row) for row in train_rows]
    assert positions == sorted(positions)  # stored order kept


def test_load_text_file_reads_utf8_with_replacements(tmp_path):
    path = _write(tmp_path / "u.txt", ("\ufeff" + "caf\u00e9\tna\u00efve\r\n" * 2).encode("utf-8"))
    assert read_text_file(path) == "caf\u00e9\tna\u00efve\r\n" * 2  # byte order mark dropped
    for split in ("train", "test"):
        assert decode_text(load_text(path, split, seq_len=11).x) == ["caf? na?ve\n"]


def test_load_text_errors(tmp_path):
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="text file '.*missing.txt' does not exist"):
        load_text(missing, "train")
    latin1 = _write(tmp_path / "latin1.txt", "na\u00efve text".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt' is not valid UTF-8: byte b'\\xef' at offset 2"):
        load_text(latin1, "train")
    short = _write(tmp_path / "short.txt", b"x" * 127)
    with pytest.raises(DataError, match="short.txt' has 127 characters.*at least 128"):
        load_text(short, "test", seq_len=64)
    assert len(load_text(short, "test", seq_len=63)) == 1  # two sequences: one per split
    with pytest.raises(DataError, match="seq_len must be at least 1"):
        load_text(None, "train", seq_len=0)
    with pytest.raises(DataError, match="unknown split"):
        load_text(None, "valid")


def test_text_dataset_moves_and_checks_tokens():
    data = load_text(None, "test", seq_len=64)
    moved = data.to("cpu")
    assert moved.vocabulary == VOCABULARY and torch.equal(moved.x, data.x)
    with pytest.raises(DataError, match="needs int64 ids"):
        Dataset("bad", data.x.float(), None, (64,), 96, None, VOCABULARY)
    with pytest.raises(DataError, match="num_levels equal to the vocabulary size 96"):
        Dataset("bad", data.x, None, (64,), 17, None, VOCABULARY)
    with pytest.raises(DataError, match=r"1 token ids lie outside \[0, 95\]"):
        Dataset("bad", torch.tensor([[0, 96]]), None, (2,), 96, None, VOCABULARY)
