"""The one text preprocessing of the project: training, evaluation and the API all call `tokenize`.

Steps: HTML entities and tags → text; Unicode NFKC (ligatures, full-width letters); lower-case;
emoji and other symbols → spaces; sentences glued by punctuation ("only.great") split; money normalised ("£1,234.00" → "£1234", "£ 50" → "£50", "$20" → "usd20");
NLTK word tokenization; punctuation trimmed; English stopwords removed; WordNet lemmatization;
optional Snowball stemming. Model numbers and sizes ("ps4", "64gb", "45x45cm") stay whole.

The NLTK resources (punkt_tab, stopwords, wordnet) are loaded once per process, on first use.
"""
from __future__ import annotations

import functools
import html
import re
import unicodedata

REQUIRED_NLTK_DATA = ("tokenizers/punkt_tab", "corpora/stopwords", "corpora/wordnet")

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


class NltkDataError(LookupError):
    """The NLTK data the preprocessing needs is not installed where NLTK looks."""


def tokenize(text: str, stem: bool = False) -> list[str]:
    """The tokens of a listing text (see the module docstring); `[]` for an empty or symbol-only text."""
    stopwords, lemmatize, stemmer = _resources()
    from nltk.tokenize import word_tokenize

    tokens = []
    for raw in word_tokenize(_normalise(text)):
        token = "not" if raw == "n't" else raw.strip(_EDGE_PUNCTUATION)
        if token in stopwords or not _HAS_ALNUM.search(token) or (len(token) == 1 and not token.isdigit()):
            continue
        token = lemmatize(token)
        tokens.append(stemmer.stem(token) if stem else token)
    return tokens


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", html.unescape(_HTML_TAG.sub(" ", html.unescape(text or ""))))
    text = _GLUED.sub(" ", _SEPARATORS.sub(" ", _NOT_TOKEN_CHAR.sub(" ", text.lower())))
    return _MONEY.sub(lambda m: _CURRENCY[m.group(1)] + m.group(2).replace(",", "") + " ", text)


@functools.cache
def _resources():
    """Stopwords, a memoised WordNet lemmatizer and the Snowball stemmer, loaded once per process."""
    import nltk
    from nltk.corpus import stopwords
    from nltk.stem import SnowballStemmer, WordNetLemmatizer
    from nltk.tokenize import word_tokenize

    try:
        word_tokenize("Loads punkt_tab. Now.")
        english_stopwords = frozenset(stopwords.words("english"))
        lemmatizer = WordNetLemmatizer()
        lemmatizer.lemmatize("sofas")  # loads WordNet now rather than on the first listing
    except LookupError as exc:
        raise NltkDataError(
            f"NLTK data missing ({', '.join(REQUIRED_NLTK_DATA)} are needed). Set NLTK_DATA (or the "
            f"config's data.nltk_data) to a directory holding them, e.g. after "
            f"`python -m nltk.downloader -d DIR punkt_tab stopwords wordnet`. NLTK searched: {nltk.data.path}"
        ) from exc
    lemmatize = functools.lru_cache(maxsize=200_000)(lemmatizer.lemmatize)
    return english_stopwords, lemmatize, SnowballStemmer("english")
