"""Data pipeline throughput (MB/s per stage on this machine) and near-dedup recall/precision.

    python bench/data.py                 # 200 MB generated corpus + the planted-duplicate benchmark
    python bench/data.py --mb 20         # a quicker look

Throughput: a generated corpus of realistic-looking documents (Zipfian vocabulary, paragraphs,
curly quotes, some mojibake, e-mails and phone numbers, page numbers and running heads, a share
of low-quality and duplicated documents, .txt and .jsonl.gz files) goes through the real
stages: prepare (read + clean + redact + filter + dedup + split), tokenizer training, and
tokenization into shards. The peer in the same run is Hugging Face `tokenizers` encoding the
same text (our shard writer uses tiktoken on the same vocabulary).

Near-dedup: distinct documents plus planted copies with a few words changed; the exact Jaccard of
each planted pair's word-5-gram sets is computed, and recall is measured on the pairs at
Jaccard >= 0.8. Precision counts every dropped document that is not a planted copy as a false
positive; hard negatives (pairs at Jaccard 0.4-0.65) are reported separately.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from myllm.config import DedupConfig, RunConfig  # noqa: E402
from myllm.data import dedup as dd  # noqa: E402

SYLLABLES = "ka lo mi ne ru ta shi ven dor al ex um pra ston lee ber quo ith mar tel gan os rin fe".split()
COMMON = "the of and to a in is it that was he for on are as with his they at be this from have or by".split()


class TextGen:
    """English-looking prose: Zipf-distributed words, sentences, paragraphs."""

    def __init__(self, seed: int, vocab: int = 20000):
        rng = np.random.default_rng(seed)
        words = list(COMMON)
        while len(words) < vocab:
            words.append("".join(rng.choice(SYLLABLES, rng.integers(1, 4))))
        self.words = np.array(words)
        p = 1.0 / np.arange(1, vocab + 1) ** 1.05
        self.p = p / p.sum()
        self.rng = rng

    def paragraph(self) -> str:
        n = int(self.rng.integers(40, 140))
        ws = self.words[self.rng.choice(len(self.words), n, p=self.p)].tolist()
        out, i = [], 0
        while i < n:
            k = int(self.rng.integers(6, 20))
            sent = " ".join(ws[i : i + k])
            out.append(sent[:1].upper() + sent[1:] + self.rng.choice([".", ".", ".", "?", ","]))
            i += k
        return " ".join(out).replace(",", ".")

    def document(self, paragraphs: int) -> str:
        return "\n\n".join(self.paragraph() for _ in range(paragraphs))


def noisy(doc: str, rng: random.Random) -> str:
    """Add the dirt the cleaning and redaction steps exist for."""
    r = rng.random()
    if r < 0.05:
        doc = doc.replace(" the ", " “the” ", 3).replace(" it ", " it’s ", 2)
    elif r < 0.07:
        doc = doc + "\n\nCafÃ© owners said the rÃ©sumÃ© was fine."
    elif r < 0.10:
        pages = doc.split("\n\n")
        doc = "\n\n".join(f"THE DAILY RECORD\n\n{p}\n\nPage {i + 1}" for i, p in enumerate(pages))
    if rng.random() < 0.05:
        doc += f"\n\nWrite to j.doe{rng.randint(1, 999)}@example.org or call +1 202-555-{rng.randint(1000, 9999)}."
    return doc


def make_corpus(folder: Path, mb: float, seed: int = 0) -> int:
    """Write about `mb` MB of documents (5% exact duplicates, 3% near duplicates, 5% junk); return bytes."""
    gen, rng = TextGen(seed), random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total, file_no, recent = 0, 0, []
    target = int(mb * 1e6)
    while total < target:
        docs = []
        for _ in range(500):
            r = rng.random()
            if r < 0.05 and recent:
                text = rng.choice(recent)
            elif r < 0.08 and recent:
                words = rng.choice(recent).split(" ")
                for _ in range(max(1, len(words) // 100)):
                    words[rng.randrange(len(words))] = "changed"
                text = " ".join(words)
            elif r < 0.13:
                text = "\n".join(f"• ### {rng.randint(0, 99)} !!! ..." for _ in range(rng.randint(10, 40)))
            else:
                text = noisy(gen.document(rng.randint(1, 12)), rng)
            recent = (recent + [text])[-200:]
            docs.append(text)
        if file_no % 2:
            with gzip.open(folder / f"part-{file_no:05d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as f:
                for d in docs:
                    f.write(json.dumps({"text": d}) + "\n")
        else:
            sub = folder / f"txt-{file_no:05d}"
            sub.mkdir()
            for i, d in enumerate(docs):
                (sub / f"{i:03d}.txt").write_text(d, encoding="utf-8")
        total += sum(len(d.encode()) for d in docs)
        file_no += 1
    return total


def machine_speed() -> str:
    """A fixed pure-Python workload's rate: the shared VM's speed varies by tens of percent from hour to
    hour, so each run prints this before and after timing, to compare runs with each other."""
    t0 = time.perf_counter()
    words = ("the cat sat on the mat " * 200_000).split()
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    return f"reference workload {len(words) / (time.perf_counter() - t0) / 1e6:.1f} M words/s"


def throughput(mb: float, workers: int, corpus: Path | None) -> None:
    from myllm.data.corpus import iter_texts
    from myllm.data.prepare import prepare_corpus
    from myllm.data.shards import write_shards
    from myllm.tokenizer import train_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="myllm-bench-data-"))
    try:
        t0 = time.perf_counter()
        docs = corpus or tmp / "docs"
        if corpus is not None and corpus.with_name(corpus.name + ".size").is_file():
            size = int(corpus.with_name(corpus.name + ".size").read_text())
        else:
            size = make_corpus(docs, mb)
            if corpus is not None:
                corpus.with_name(corpus.name + ".size").write_text(str(size))
        print(f"corpus {size / 1e6:.1f} MB ({time.perf_counter() - t0:.0f}s to make); {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f} before timing; {machine_speed()}")
        cfg = RunConfig()
        cfg.data.workers = workers
        cpu0, t0 = time.process_time(), time.perf_counter()
        manifest = prepare_corpus(docs, tmp / "run" / "corpus", cfg.data, cfg.clean, cfg.quality, cfg.dedup)
        t_prepare = time.perf_counter() - t0
        cpu_prepare = time.process_time() - cpu0
        kept = sum(v["bytes"] for v in manifest["splits"].values())
        t0 = time.perf_counter()
        every = max(1, -(-manifest["splits"]["train"]["bytes"] // (cfg.data.tokenizer_train_mb << 20)))
        tok = train_tokenizer(iter_texts(tmp / "run" / "corpus" / "train.jsonl", every), 4096,
                              tmp / "run" / "tokenizer" / "tokenizer.json")
        t_tok_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = write_shards(tmp / "run" / "corpus", tok, tmp / "run" / "shards", 1 << 24, threads=workers)
        t_shards = time.perf_counter() - t0
        tokens = sum(v["tokens"] for v in index["splits"].values())
        texts = [json.loads(line)["text"] for line in open(tmp / "run" / "corpus" / "val.jsonl")]
        with open(tmp / "run" / "corpus" / "train.jsonl") as f:
            texts += [json.loads(line)["text"] for _, line in zip(range(4000), f)]
        n = sum(len(t.encode()) for t in texts)
        t0 = time.perf_counter()
        tok.encode_batch(texts)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        tok.hf.encode_batch_fast(texts, add_special_tokens=False)
        t_hf = time.perf_counter() - t0
        print(f"\n{'stage':<44} {'seconds':>8} {'MB/s':>8}")
        rows = [
            ("prepare: read+clean+redact+filter+dedup+split", t_prepare, size),
            (f"tokenizer training ({tok.vocab_size} vocab)", t_tok_train, kept),
            ("tokenization into shards (kept text)", t_shards, kept),
            ("end to end, without tokenizer training", t_prepare + t_shards, size),
            ("end to end, with tokenizer training", t_prepare + t_tok_train + t_shards, size),
        ]
        for name, sec, nbytes in rows:
            print(f"{name:<44} {sec:8.1f} {nbytes / sec / 1e6:8.2f}")
        print(f"\nkept {kept / 1e6:.1f} of {size / 1e6:.1f} MB; {tokens:,} tokens; steps:")
        for s in manifest["steps"]:
            print(f"  {s['step']:<14} {s['documents_in']:>8,} -> {s['documents_out']:>8,} docs")
        print(f"tokenizer peer, same {n / 1e6:.1f} MB: tiktoken path {n / t_fast / 1e6:.2f} MB/s, "
              f"HF tokenizers {n / t_hf / 1e6:.2f} MB/s, ratio {t_hf / t_fast:.2f}x")
        print(f"main-process CPU during prepare: {cpu_prepare:.0f}s of {t_prepare:.0f}s wall; after timing: "
              f"{machine_speed()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def shingle_set(text: str, k: int = 5) -> set[tuple[str, ...]]:
    w = text.lower().split()
    return {tuple(w[i : i + k]) for i in range(max(1, len(w) - k + 1))}


def dedup_quality(n_docs: int, n_planted: int, seed: int = 1) -> None:
    gen, rng = TextGen(seed), random.Random(seed)
    docs = [gen.document(rng.randint(2, 8)) for _ in range(n_docs)]
    planted: list[tuple[int, float]] = []  # (index of the copy, exact Jaccard with its original)
    hard: list[tuple[int, float]] = []
    for i in range(n_planted):
        src = docs[i]
        words = src.split(" ")
        hard_negative = i % 4 == 3
        changes = rng.randint(len(words) // 12, len(words) // 8) if hard_negative else \
            rng.randint(1, max(1, len(words) // 35))
        for _ in range(changes):
            words[rng.randrange(len(words))] = rng.choice(["alpha", "beta", "gamma", "delta", "omega"])
        copy = " ".join(words)
        a, b = shingle_set(src), shingle_set(copy)
        docs.append(copy)
        (hard if hard_negative else planted).append((len(docs) - 1, len(a & b) / len(a | b)))
    cfg = DedupConfig()
    hasher = dd.MinHasher(cfg.num_perm, cfg.shingle_words, cfg.seed)
    t0 = time.perf_counter()
    sigs = np.stack([hasher.signature(d) for d in docs])
    keys = np.array([dd.text_key(d) for d in docs], dtype=np.uint64)
    reasons = dd.plan_drops(keys, sigs, np.zeros(len(docs), bool), exact=True, near=True, decontaminate=True,
                            bands=cfg.bands, threshold=cfg.threshold)
    seconds = time.perf_counter() - t0
    dropped = set(np.flatnonzero(reasons != dd.KEEP).tolist())
    positives = [i for i, j in planted if j >= cfg.threshold]
    found = sum(i in dropped for i in positives)
    fp = len(dropped - {i for i, _ in planted} - {i for i, _ in hard})
    tp_like = len(dropped & {i for i, _ in planted})
    hard_dropped = [j for i, j in hard if i in dropped]
    print(f"\nnear-dedup benchmark: {n_docs:,} distinct documents + {len(planted)} planted near copies "
          f"({len(positives)} at Jaccard >= {cfg.threshold}, min {min(j for _, j in planted):.2f}) + {len(hard)} "
          f"hard negatives (Jaccard {min(j for _, j in hard):.2f}-{max(j for _, j in hard):.2f}); "
          f"{seconds:.1f}s")
    print(f"recall at Jaccard >= {cfg.threshold}: {found / max(len(positives), 1):.4f} ({found}/{len(positives)})")
    print(f"precision: {tp_like / max(tp_like + fp, 1):.4f} ({fp} distinct documents dropped)")
    print(f"hard negatives dropped: {len(hard_dropped)}/{len(hard)}"
          + (f" (their Jaccard: {', '.join(f'{j:.2f}' for j in sorted(hard_dropped)[-5:])})" if hard_dropped else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=200.0, help="size of the generated corpus")
    p.add_argument("--workers", type=int, default=0, help="0 = one per core")
    p.add_argument("--dedup-docs", type=int, default=20000)
    p.add_argument("--planted", type=int, default=2000)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--corpus", type=Path, help="keep the generated corpus in this folder and reuse it next time")
    a = p.parse_args()
    if not a.skip_throughput:
        throughput(a.mb, a.workers, a.corpus)
    dedup_quality(a.dedup_docs, a.planted)


if __name__ == "__main__":
    main()
