from tlm.keywords import candidate_phrases, make_query, rake_keywords

ABSTRACT = (
    "Compatibility of systems of linear constraints over the set of natural numbers. Criteria of compatibility "
    "of a system of linear Diophantine equations, strict inequations, and nonstrict inequations are considered."
)


def test_candidate_phrases_split_at_stopwords_and_punctuation():
    assert candidate_phrases("Compatibility of systems, of linear constraints.") == [
        ("compatibility",),
        ("systems",),
        ("linear", "constraints"),
    ]


def test_rake_ranks_multiword_phrases_first():
    kws = rake_keywords(ABSTRACT, 3)
    assert kws[0] == "linear diophantine equations"
    assert len(kws) == 3 and len(set(kws)) == 3


def test_make_query_modes():
    assert make_query("raw text here", "raw", 5) == "raw text here"
    assert make_query(ABSTRACT, "keywords", 2).startswith("linear diophantine equations")
    assert (
        make_query("the of and", "keywords", 5) == "the of and"
    )  # nothing to extract: fall back to the text
