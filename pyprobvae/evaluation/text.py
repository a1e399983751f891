"""
How real the words of generated text are: the share of its words that occur
in the training text.

A *word* is a maximal run of ASCII letters of length at least
:data:`MIN_WORD_LENGTH` (3), so ``"os.path.join(a, b)"`` has the words
``path`` and ``join``. Shorter runs are left out: one- and two-letter runs
(``a``, ``is``, single-letter variables) are real by chance. The share is
counted over word occurrences, not distinct words, and is case-sensitive
(``Return`` and ``return`` are different words), as the training text
spells them. Fixed-length sequences cut words at their ends, so a run of
letters that touches the start or the end of a text is not counted, in the
training text and in the samples alike. A character-level model that has learned only the texture of
its corpus scores low (most runs of letters it makes are not words);
one that has learned the words scores near 1.
"""

import re
from typing import Iterable, Sequence

MIN_WORD_LENGTH = 3
"""The shortest run of letters that counts as a word."""

_WORD = re.compile(rf"(?<![A-Za-z])[A-Za-z]{{{MIN_WORD_LENGTH},}}(?![A-Za-z])")


def words(text: str) -> list:
    """
    The words of ``text``: its maximal runs of at least
    :data:`MIN_WORD_LENGTH` ASCII letters, in order, but for runs touching
    the start or the end of ``text`` (which may be cut).
    """
    return [m.group() for m in _WORD.finditer(text) if m.start() > 0 and m.end() < len(text)]


def vocabulary_of(texts: Iterable[str]) -> frozenset:
    """Every word that occurs in ``texts``."""
    return frozenset(word for text in texts for word in words(text))


def real_word_scores(samples: Sequence[str], vocabulary: frozenset) -> dict:
    """
    :param samples: generated texts.
    :param vocabulary: the training text's words (:func:`vocabulary_of`).
    :return: ``{"real_word_share": real / total or None, "words": total,
        "samples": len(samples)}``; the share is None when the samples hold
        no word at all.
    """
    found = [word for text in samples for word in words(text)]
    real = sum(word in vocabulary for word in found)
    return {"real_word_share": real / len(found) if found else None, "words": len(found), "samples": len(samples)}
