"""The real-word share of generated text (pyprobvae.evaluation.text), against hand-counted cases."""

from pyprobvae.evaluation import real_word_scores, vocabulary_of
from pyprobvae.evaluation.text import words


def test_words_are_maximal_letter_runs_of_three_or_more_not_touching_the_ends():
    assert words("os.path.join(a, b) is xy Return_value 3abc4 end") == ["path", "join", "Return", "value", "abc"]
    assert words("start and stop") == ["and"]  # "start" and "stop" touch the ends and may be cut
    assert words("ab") == [] and words("") == []


def test_share_counts_occurrences_case_sensitively():
    known = vocabulary_of([" the return value of the function ", " Return "])
    assert known == frozenset({"the", "return", "value", "function", "Return"})
    scores = real_word_scores([" the retrun value ", " the the RETURN x "], known)
    # words: the, retrun, value | the, the, RETURN -> real: the, value, the, the
    assert scores == {"real_word_share": 4 / 6, "words": 6, "samples": 2}


def test_no_words_gives_no_share():
    assert real_word_scores([" a b ", " 12 "], frozenset({"abc"})) == {"real_word_share": None, "words": 0, "samples": 2}
