"""The one text preprocessing of the project: training, evaluation and the API all call `tokenize`.

Steps: HTML entities and tags → text; Unicode NFKC (ligatures, full-width letters); lower-case;
emoji and other symbols → spaces; sentences glued by punctuation ("only.great") split; money normalised ("£1,234.00" → "£1234", "£ 50" → "£50", "$20" → "usd20");
full stops that end a sentence set apart; NLTK (Treebank) word tokenization; punctuation trimmed; English stopwords removed; WordNet lemmatization;
optional Snowball stemming. Model numbers and sizes ("ps4", "64gb", "45x45cm") stay whole.

The text is word-tokenized as one line: NLTK's default first splits it into sentences with Punkt,
which took half of all tokenizing time, only so that the Treebank tokenizer sees each sentence's
final full stop (it splits off just the last one of its input, and with it a clitic such as "80's.").
Setting every sentence-ending full stop apart beforehand gives the same tokens (all 6,098 dataset
listings, tested against NLTK's default) in half the time.

The NLTK resources (stopwords, wordnet) are loaded once per process, on first use.
"""
from __future__ import annotations

import functools
import re
import unicodedata

from listings.config import DEFAULT_NLTK_DATA
from listings.data import unescape_html

REQUIRED_NLTK_DATA = ("corpora/stopwords", "corpora/wordnet")

_HTML_TAG = re.compile(r"<[^<>]{0,200}>")
# Everything but letters, digits, whitespace and the punctuation that can sit inside a token.
_NOT_TOKEN_CHAR = re.compile(r"[^\w\s£$€.,'%&+\-:;!?()\"]")
_SEPARATORS = re.compile(r"[_/|\\*~=#<>\[\]{}]")
_MONEY = re.compile(r"([£$€])\s*(\d[\d,]*)(?:\.\d\d)?(?!\d)")
_CURRENCY = {"£": "£", "$": "usd", "€": "eur"}  # NLTK splits "$20" but keeps "£20" whole
_EDGE_PUNCTUATION = ".,'%&+-:;!?()\"`"
_HAS_ALNUM = re.compile(r"[^\W_]")
# Sentences run together without a space ("collection only.Great condition"): split between words.
_GLUED = re.compile(r"(?<=[^\W\d_]{2})[.,;:!?)](?=[^\W\d_]{2})")
_SENTENCE_END = re.compile(r"\.(?=\s|$)")


class NltkDataError(LookupError):
    """The NLTK data the preprocessing needs is not installed where NLTK looks."""


class NounLemmatizer:
    """`nltk.stem.WordNetLemmatizer().lemmatize(word)`, WordNet's morphy for nouns, from the only two
    WordNet files it reads (index.noun, noun.exc). NLTK's own reader parses the whole of WordNet
    first, which took 5-7 s of every process start (the server's, the command line's); this takes
    a fraction of a second and gives the same lemma for every word (tested against NLTK's)."""

    SUBSTITUTIONS = (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"))

    def __init__(self, lemmas: frozenset[str], exceptions: dict[str, list[str]]):
        self.lemmas, self.exceptions = lemmas, exceptions

    @classmethod
    def load(cls) -> "NounLemmatizer":
        """From the WordNet where NLTK finds it (a directory or its zip); LookupError when missing."""
        import nltk

        try:
            wordnet = nltk.data.find("corpora/wordnet")
        except LookupError:  # as NLTK's own corpus loader does, look inside the zip
            wordnet = nltk.data.find("corpora/wordnet.zip/wordnet/")
        with wordnet.join("index.noun").open(encoding="utf8") as index:
            lemmas = frozenset(line.split(None, 1)[0] for line in index if line.strip() and not line.startswith(" "))
        with wordnet.join("noun.exc").open(encoding="utf8") as listed:
            exceptions = {terms[0]: terms[1:] for terms in (line.split() for line in listed) if terms}
        return cls(lemmas, exceptions)

    def lemmatize(self, word: str) -> str:
        """The shortest WordNet noun among the word and its rule-based (or listed irregular) base forms; the word itself when none is a noun."""
        if word in self.exceptions:
            forms = self.exceptions[word]
        else:
            forms = [word[: -len(old)] + new for old, new in self.SUBSTITUTIONS if word.endswith(old)]
        known = [form for form in dict.fromkeys([word, *forms]) if form in self.lemmas]
        return min(known, key=len) if known else word


def tokenize(text: str, stem: bool = False) -> list[str]:
    """The tokens of a listing text (see the module docstring); `[]` for an empty or symbol-only text."""
    stopwords, lemmatize, stemmer = _resources()
    from nltk.tokenize import word_tokenize

    tokens = []
    for raw in word_tokenize(_normalise(text), preserve_line=True):
        token = "not" if raw == "n't" else raw.strip(_EDGE_PUNCTUATION)
        if token in stopwords or not _HAS_ALNUM.search(token) or (len(token) == 1 and not token.isdigit()):
            continue
        token = lemmatize(token)
        tokens.append(stemmer.stem(token) if stem else token)
    return tokens


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", unescape_html(_HTML_TAG.sub(" ", unescape_html(text or ""))))
    text = _GLUED.sub(" ", _SEPARATORS.sub(" ", _NOT_TOKEN_CHAR.sub(" ", text.lower())))
    text = _MONEY.sub(lambda m: _CURRENCY[m.group(1)] + m.group(2).replace(",", "") + " ", text)
    return _SENTENCE_END.sub(" . ", text)


def check_nltk_data() -> None:
    """An NltkDataError now if NLTK's data is missing, for a long run to check before its first
    stage: the data is loaded as tokenizing loads it (once per process), so nothing is loaded twice."""
    _resources()


@functools.cache
def _resources():
    """Stopwords, a memoised WordNet noun lemmatizer and the Snowball stemmer, loaded once per process."""
    import nltk
    from nltk.corpus import stopwords
    from nltk.stem import SnowballStemmer

    try:
        english_stopwords = frozenset(stopwords.words("english"))
        lemmatizer = NounLemmatizer.load()
    except LookupError as exc:
        raise NltkDataError(
            f"NLTK data missing ({', '.join(REQUIRED_NLTK_DATA)} are needed). Set NLTK_DATA (or the "
            f"config's data.nltk_data) to a directory holding them, e.g. after "
            f"`python -m nltk.downloader -d DIR stopwords wordnet`. NLTK searched: {nltk.data.path}; without NLTK_DATA, "
            f"fbm looks in {DEFAULT_NLTK_DATA}{'' if DEFAULT_NLTK_DATA.exists() else ', which does not exist'}"
        ) from exc
    lemmatize = functools.lru_cache(maxsize=200_000)(lemmatizer.lemmatize)
    return english_stopwords, lemmatize, SnowballStemmer("english")
