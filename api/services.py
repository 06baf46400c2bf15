"""What the API serves from: the predictor, the listing index and the listing photos, loaded once.

`load_services` is the only place that opens the trained artifacts; a missing or mismatched file
raises FileNotFoundError or ValueError naming it, before the server accepts a connection.
"""
from __future__ import annotations

import ctypes
import gc
from dataclasses import dataclass
from typing import Any

from PIL import Image

from listings.config import Config, available_cores
from listings.photos import PhotoStore


@dataclass
class Services:
    predictor: Any  # combined_model.inference.Predictor or a stand-in with .classes, .versions, .prepare, .predict_prepared
    index: Any  # retrieval.index.ListingIndex or a stand-in with .search, .stored, .check_category, .add, .delete, len(), .info
    photos: PhotoStore
    terms: Any = None  # retrieval.terms.TermWeights: queries and new listings' words; None: no re-ranking


def inference_layout(config: Config) -> tuple[int, int]:
    """(inference threads, torch threads per pass): by default one single-threaded pass per core.
    On the 2-core development machine two single-threaded passes of batch 8 ran 125–159 listings/s
    where one pass over both cores ran 89–122 (batch 8) or 70–96 (batch 32), and the server at
    concurrency 16 went from 38–48 to 47–59 requests/s. `fbm bench` measures the model alone in
    whatever layout this returns."""
    cores = available_cores()
    workers = config.serve.inference_workers or cores
    return workers, config.serve.torch_threads or max(1, cores // workers)


def set_torch_threads(config: Config) -> tuple[int, int]:
    """Apply `inference_layout`'s torch threads to this process, and `keep_freed_memory`; returns the layout."""
    import torch

    workers, threads = inference_layout(config)
    torch.set_num_threads(threads)
    keep_freed_memory()
    return workers, threads


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # the most glibc accepts on 64-bit
KEPT_FREE_BYTES = 256 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory instead of handing it back to the kernel: blocks
    under 32 MiB come from the heap, and a heap is trimmed only once 256 MiB of it is free. By
    default a large block is mmapped and unmapped again, or the heap trimmed as soon as a little
    more than the last large block is free, so a pass's activations (megabytes each, their sizes
    varying with the photos in the pass) had their pages faulted in afresh pass after pass: in `fbm
    serve` at concurrency 16, 550–660 page faults and 2.4 ms of kernel time per `/combined` request,
    against 5–40 and 0.3 ms with this. Blocks of 32 MiB and more (an index's vectors as it grows)
    are still mmapped and handed back when freed. False where the C library has no mallopt (not
    glibc): nothing changes there."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES))


def freeze_loaded_objects() -> None:
    """Move everything loaded so far (about 320,000 objects: vocabularies, the TF-IDF model's
    dictionary) out of the garbage collector's reach. Each full collection scanned them all,
    160 ms holding Python's lock while no request moved. For a process that loads once and then
    serves: objects frozen are never collected."""
    gc.collect()
    gc.freeze()


def load_services(config: Config) -> Services:
    """Load the models and open the index named by `config`; raises with the path of anything unusable."""
    from combined_model.inference import Predictor
    from retrieval.index import IndexStateError, ListingIndex
    from retrieval.terms import TermWeights

    set_torch_threads(config)
    config.apply_nltk_data()
    predictor = Predictor.load(config)
    warm_up(predictor, config)  # missing NLTK data fails here, before the index is opened (and reconciled)
    try:
        index = ListingIndex.open(config.paths.index, config.index, serving=True)
    except IndexStateError as exc:
        raise ValueError(str(exc)) from exc
    try:
        check_index_matches(index, predictor)
        terms = TermWeights.load(config, predictor.tfidf)  # the served late fusion's TF-IDF model, when it has one
        photos = PhotoStore.for_config(config)
        photos.remove_unreferenced(index.photo_ids())  # this process alone writes: what a killed write left behind
    except BaseException:
        index.close()  # and its serving lock: a caller that reports the error and retries is not refused as a second server
        raise
    return Services(predictor=predictor, index=index, photos=photos, terms=terms)


def warm_up(predictor: Any, config: Config) -> None:
    """One prediction through every branch before serving: the first request is not the slow one, and
    resources loaded lazily (NLTK data) fail here, at start-up, rather than on a client's request."""
    photo = Image.new("RGB", (config.data.image_size, config.data.image_size))
    try:
        predictor.predict_many([([photo], "warm up: oak dining chair")], "combined")
    except LookupError as exc:
        raise ValueError(str(exc)) from exc


def check_index_matches(index: Any, predictor: Any) -> None:
    """The index holds [image, text] embeddings side by side: its dimension must be the models' two."""
    model_dims = (predictor.image.embed_dim, predictor.text.embed_dim)
    index_dim = int(index.info()["dim"])
    if index_dim != sum(model_dims):
        faiss_file = index.faiss_path(index.directory, index.build_id)
        raise ValueError(
            f"{faiss_file} holds {index_dim}-d vectors but the models embed into {model_dims[0]}+{model_dims[1]}: "
            "rebuild the index with `fbm index`"
        )
