"""`fbm train text`: tokens → word2vec (training split only) → text CNN, with a TF-IDF + SVM baseline.

Writes to `config.paths.text_model`: `word2vec.bin` (word2vec C binary format), `word2vec_tsne.png`,
`tfidf_svm/` (the baseline), `model.pt` + `model.json` + `vocab.json` (the CNN), `curves.png`,
`text_embeddings.npz` (every product's embedding, probabilities and known-token count, computed
by the served `TextBranch`, and the saved TF-IDF model's probabilities) and `summary.json`.
Settings are chosen on validation; test figures are reported, never used for a choice.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from gensim.models import KeyedVectors
from torch import nn
from tqdm import tqdm

from listings.artifacts import CURVES_FILE, SUMMARY_FILE, sha256_file
from listings.config import Config, TextConfig
from listings.data import listing_text
from listings.metrics import figure, summarise
from listings.plots import plot_curves
from listings.prepare import load_prepared
from text_model.baseline import BASELINE_DIR, TfidfSvmBaseline
from text_model.inference import EXPORT_FILE, MODEL_FILE, SIDECAR_FILE, VOCAB_FILE, TextBranch, predict_ids
from text_model.model import TextCNN, TextCNNShape
from text_model.preprocess import tokenize
from text_model.vocab import PAD_ID, UNK_ID, Vocabulary, pad_batch
from text_model.word2vec import nearest_neighbours, plot_tsne, save_vectors, train_word2vec, word_categories

WORD2VEC_FILE = "word2vec.bin"
TSNE_FILE = "word2vec_tsne.png"
PROBE_WORDS = ("sofa", "iphone", "drill")
EVAL_SPLITS = ("val", "test")
KEPT_RULE = "best validation accuracy, ties to the lower loss"  # how `fit_cnn` chooses the epoch it keeps, for the curves


def tokenize_texts(texts: list[str], stem: bool) -> list[list[str]]:
    return [tokenize(text, stem) for text in tqdm(texts, desc="tokenize", unit="text", mininterval=1.0)]


def word_matrix(vectors: KeyedVectors, vocab: Vocabulary) -> torch.Tensor:
    """Embedding rows in vocabulary order: PAD is zero, UNK the mean word vector."""
    matrix = np.zeros((len(vocab), vectors.vector_size), np.float32)
    matrix[2:] = vectors[vocab.words[2:]]
    matrix[UNK_ID] = matrix[2:].mean(axis=0) if len(vocab) > 2 else 0.0
    matrix[PAD_ID] = 0.0
    return torch.from_numpy(matrix)


def length_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches of similar-length texts: shuffle, sort within windows of 20 batches, shuffle batches."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * 20
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def fit_cnn(
    model: TextCNN,
    train_ids: list[list[int]],
    train_labels: np.ndarray,
    val_ids: list[list[int]],
    val_labels: np.ndarray,
    cfg: TextConfig,
    seed: int,
) -> list[dict]:
    """Train with early stopping on validation accuracy; leaves the model at its best epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    targets = torch.as_tensor(train_labels, dtype=torch.long)
    lengths = [len(ids) for ids in train_ids]
    history: list[dict] = []
    best_key, best_state, since_best = None, None, 0
    for epoch in (bar := tqdm(range(1, cfg.epochs + 1), desc="text CNN", unit="epoch")):
        start = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for batch in length_batches(lengths, cfg.batch_size, generator):
            ids, batch_lengths = pad_batch([train_ids[i] for i in batch], model.min_length)
            _, logits = model(ids, batch_lengths)
            loss = loss_fn(logits, targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(batch), seen + len(batch)
        _, val_probs = predict_ids(model, val_ids)
        val_loss = float(nn.functional.nll_loss(torch.log(torch.from_numpy(val_probs).clamp_min(1e-12)), torch.as_tensor(val_labels)))
        record = {"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss, **{f"val_{k}": v for k, v in summarise(val_labels, val_probs).items()}}
        record["epoch_time_s"] = round(time.perf_counter() - start, 2)
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_acc=record["val_accuracy"], val_loss=f"{val_loss:.3f}")
        key = (record["val_accuracy"], -val_loss)
        if best_key is None or key > best_key:
            best_key, best_state, since_best = key, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return history


def train_text(config: Config) -> dict:
    """Train and save the whole text branch; return (and print) its summary."""
    wall_start = time.perf_counter()
    config.apply_nltk_data()
    cfg, seed = config.text, config.data.seed
    out = config.paths.text_model
    torch.manual_seed(seed)

    prepared = load_prepared(config, for_training=True)  # refuses first when `fbm prepare` has not run
    out.mkdir(parents=True, exist_ok=True)
    listings = prepared.listings
    classes = prepared.encoder.classes
    labels = listings["label"].to_numpy()
    rows = {name: np.flatnonzero(listings["split"].to_numpy() == name) for name in ("train", *EVAL_SPLITS)}
    if len(rows["train"]) == 0 or len(rows["val"]) == 0:
        raise ValueError("the text branch needs listings in the training and validation splits")
    tokens = tokenize_texts([listing_text(t, d) for t, d in zip(listings["title"], listings["description"])], cfg.stem)
    train_tokens = [tokens[i] for i in rows["train"]]

    start = time.perf_counter()
    vectors = train_word2vec(train_tokens, cfg, seed)
    word2vec_time = time.perf_counter() - start
    neighbours = save_word2vec(vectors, out, cfg.stem, seed, word_categories(train_tokens, labels[rows["train"]].tolist(), classes))

    baseline = TfidfSvmBaseline.from_config(classes, cfg).fit(train_tokens, labels[rows["train"]])
    baseline.save(out / BASELINE_DIR)
    baseline_metrics = {
        split: summarise(labels[rows[split]], baseline.predict_proba_tokens([tokens[i] for i in rows[split]]))
        for split in EVAL_SPLITS
        if len(rows[split])
    }

    vocab = Vocabulary.from_words(vectors.index_to_key)
    ids = [vocab.encode(t, cfg.max_tokens)[0] for t in tokens]
    shape = TextCNNShape(len(vocab), vectors.vector_size, len(classes), tuple(cfg.kernel_sizes), cfg.channels, cfg.embed_dim, cfg.dropout)
    model = TextCNN(shape, word_matrix(vectors, vocab), finetune_words=cfg.finetune_embeddings)
    history = fit_cnn(
        model, [ids[i] for i in rows["train"]], labels[rows["train"]], [ids[i] for i in rows["val"]], labels[rows["val"]], cfg, seed
    )
    best_epoch = max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))["epoch"]  # as `fit_cnn` chose it
    plot_curves(
        history,
        out / CURVES_FILE,
        "Text CNN",
        {"val_accuracy": "validation accuracy", "val_macro_f1": "validation macro-F1"},
        kept=best_epoch,
        kept_rule=KEPT_RULE,
    )

    torch.save(model.state_dict(), out / MODEL_FILE)
    vocab.save(out / VOCAB_FILE)
    sidecar = {
        "version": "textcnn-" + sha256_file(out / MODEL_FILE)[:12],
        "classes": classes,
        "shape": shape.to_json(),
        "stem": cfg.stem,
        "max_tokens": cfg.max_tokens,
        "finetune_embeddings": cfg.finetune_embeddings,
        "text_config": config.to_dict()["text"],
        "best_epoch": best_epoch,
    }
    (out / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False), encoding="utf-8")

    probs, known = export_listings(config, tokens, listings["product_id"].astype(str).tolist())
    cnn_metrics = {split: summarise(labels[rows[split]], probs[rows[split]]) for split in EVAL_SPLITS if len(rows[split])}

    summary = {
        "settings": {"stem": cfg.stem, "finetune_embeddings": cfg.finetune_embeddings, "max_tokens": cfg.max_tokens},
        "cnn": cnn_metrics,
        "tfidf_svm_baseline": baseline_metrics,
        "vocabulary_size": len(vocab),
        "products": {name: int(len(r)) for name, r in rows.items()},
        "all_unknown_texts": int((known == 0).sum()),
        "epochs_run": len(history),
        "best_epoch": sidecar["best_epoch"],
        "word2vec_time_s": round(word2vec_time, 1),
        "cnn_epoch_time_s": round(float(np.mean([h["epoch_time_s"] for h in history])), 2),
        "word2vec_neighbours": {word: [w for w, _ in similar[:5]] for word, similar in neighbours.items()},
        "wall_time_s": round(time.perf_counter() - wall_start, 1),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary | {"history": history}, indent=2, ensure_ascii=False), encoding="utf-8")
    print(format_summary(summary), file=sys.stderr)
    return summary


def save_word2vec(vectors: KeyedVectors, out: Path, stem: bool, seed: int, categories: dict[str, str]) -> dict[str, list[tuple[str, float]]]:
    """Save the word vectors and their t-SNE map (words coloured by `categories`); print and return
    the probe words' nearest neighbours."""
    save_vectors(vectors, out / WORD2VEC_FILE)
    neighbours = nearest_neighbours(vectors, [(tokenize(word, stem) or [word])[0] for word in PROBE_WORDS], topn=8)
    for word, similar in neighbours.items():
        print(f"word2vec neighbours of {word!r}: " + (", ".join(w for w, _ in similar) or "(not in the vocabulary)"), file=sys.stderr)
    plot_tsne(vectors, out / TSNE_FILE, seed=seed, categories=categories)
    return neighbours


def export_listings(config: Config, tokens: list[list[str]], product_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every listing's embedding, probabilities and TF-IDF rows, computed by the saved branch as the
    API loads it (so the fusion and the index see exactly what serving computes); returns the
    probabilities and each text's count of known tokens."""
    embeddings, probs, known = TextBranch.load(config).embed_tokens(tokens)
    tfidf = TfidfSvmBaseline.load(config)
    words = tfidf.word_rows(tokens)
    np.savez(
        config.paths.text_model / EXPORT_FILE,
        product_ids=np.asarray(product_ids, dtype=str),
        embeddings=embeddings,
        probs=probs,
        known_tokens=known,
        tfidf_probs=tfidf.predict_proba_tokens(tokens),  # late fusion may weigh them
        word_indptr=words.indptr,  # each listing's TF-IDF word row (CSR): the index re-ranks by it
        word_columns=words.indices,
        word_weights=words.data,
    )
    return probs, known


def headline(summary: dict) -> str:
    """The branch in one line, for the end of `fbm train`."""
    test = [summary[model].get("test", {}).get("accuracy") for model in ("cnn", "tfidf_svm_baseline")]  # no test split: no figure
    return f"test accuracy {figure(test[0])} (TF-IDF + SVM {figure(test[1])})"


def format_summary(summary: dict) -> str:
    settings = ", ".join(f"text.{name}={value}" for name, value in summary["settings"].items())
    lines = [f"text branch ({settings}) in {summary['wall_time_s']} s"]
    for model in ("cnn", "tfidf_svm_baseline"):
        for split, m in summary[model].items():
            lines.append(f"  {model:<18} {split:<4}  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")
    lines.append(
        f"  word2vec {summary['word2vec_time_s']} s; CNN {summary['epochs_run']} epochs (best {summary['best_epoch']}), "
        f"{summary['cnn_epoch_time_s']} s/epoch; vocabulary {summary['vocabulary_size']:,}"
    )
    return "\n".join(lines)
