"""Supervised fine-tuning: learn to answer in the chat format, with loss on assistant tokens only.

Each conversation renders through the one chat template (`myllm.chat.render`), which also
gives the assistant mask; a token is a training target only where the mask is true (every
assistant turn's content and its `<|end|>`), so the model is never trained to write the
user's or the system's words. Short conversations are packed several to a row: each keeps
its own positions and attends only to itself (`segments`, see `Transformer.forward`), so a
packed row trains exactly as its conversations would one by one, without the padding.

Records whose data is unusable are skipped and counted (no assistant turn; longer than the
context with `sft.overlong = "drop"`, or with nothing left to learn after truncation);
malformed JSON stops with file:line, before any training.

Chat data alone makes the model forget its book text (the default run's val bpb went from
0.28 to 0.77 after SFT). So each batch also carries `sft.text_rows` windows of pretraining
text from the run's train shards, trained with the plain next-token loss, and the step's loss
is the sum of the two means (nanochat mixes pretraining-style data into its mid-training for
the same reason). `sft.text_rows = 0` trains on the chats alone.
"""

from __future__ import annotations

from pathlib import Path

import torch

from myllm.chat import check_mask, check_messages, read_jsonl, render
from myllm.config import RunConfig
from myllm.data.loader import TrainBatches
from myllm.data.shards import ShardReader
from myllm.errors import MyLLMError
from myllm.rundir import RunDir
from myllm.tokenizer import Tokenizer
from myllm.train.loop import TrainResult
from myllm.train.post import Shuffled, check_data_file, run_post_stage

IGNORE = -100
FORMAT = ('{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]} '
          "per line (roles: system, user, assistant)")


def check_record(record: dict, where: str) -> list[dict[str, str]]:
    """One chat's messages, or one line naming `where` (file:line) and the format."""
    if "messages" not in record:
        raise MyLLMError(f"{where}: no \"messages\" field; expected {FORMAT}")
    return check_messages(record["messages"], where)


def check_file(path: Path) -> int:
    return check_data_file(path, check_record, FORMAT)


def load_examples(path: Path, tok: Tokenizer, seq_len: int, overlong: str,
                  log=print) -> list[tuple[list[int], list[int]]]:
    """(inputs, targets) per usable conversation: targets are the next token where it is an
    assistant token, else -100. Counts of skipped records are printed."""
    examples, skipped = [], {"no assistant turn": 0, "too long, dropped": 0, "too long, truncated": 0}
    for n, record in read_jsonl(path, FORMAT):
        messages = check_record(record, f"{path}:{n}")
        if not any(m["role"] == "assistant" for m in messages):
            skipped["no assistant turn"] += 1
            continue
        r = render(tok, messages)
        check_mask(tok, r.ids, r.mask)
        inputs = r.ids[:-1]
        targets = [t if m else IGNORE for t, m in zip(r.ids[1:], r.mask[1:])]
        if len(inputs) > seq_len:
            if overlong == "drop":
                skipped["too long, dropped"] += 1
                continue
            inputs, targets = inputs[:seq_len], targets[:seq_len]
            if all(t == IGNORE for t in targets):
                skipped["too long, dropped"] += 1
                continue
            skipped["too long, truncated"] += 1
        examples.append((inputs, targets))
    counts = ", ".join(f"{v} {k}" for k, v in skipped.items() if v)
    log(f"sft: {len(examples)} conversations from {path}" + (f" ({counts})" if counts else ""))
    if not examples:
        raise MyLLMError(f"{path} has no usable conversations (each needs an assistant turn); check the file")
    return examples


class PackedBatches:
    """Rows of `seq_len` tokens filled greedily with whole conversations in a seeded order.

    A conversation that does not fit in the rest of a row starts the next row; the rest is
    padding (target -100, its own segment). A batch is (inputs, targets, segments), each (B, T).
    """

    def __init__(self, examples, batch_size: int, seq_len: int, seed: int, pad_id: int):
        self.examples, self.batch_size, self.seq_len, self.pad_id = examples, batch_size, seq_len, pad_id
        self.order = Shuffled(len(examples), seed)
        self._next: int | None = None  # a conversation taken from the order that did not fit the last row

    def _take(self) -> int:
        if self._next is not None:
            i, self._next = self._next, None
            return i
        return self.order.take(1)[0]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        T = self.seq_len
        x = torch.full((self.batch_size, T), self.pad_id, dtype=torch.long)
        y = torch.full((self.batch_size, T), IGNORE, dtype=torch.long)
        seg = torch.full((self.batch_size, T), -1, dtype=torch.long)
        for row in range(self.batch_size):
            used, k = 0, 0
            while True:
                i = self._take()
                inputs, targets = self.examples[i]
                if used + len(inputs) > T:
                    self._next = i
                    break
                x[row, used : used + len(inputs)] = torch.tensor(inputs)
                y[row, used : used + len(inputs)] = torch.tensor(targets)
                seg[row, used : used + len(inputs)] = k
                used, k = used + len(inputs), k + 1
            seg[row, used:] = k  # padding: a segment of its own
        return x, y, seg

    def state_dict(self) -> dict:
        return {**self.order.state_dict(), "next": self._next}

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)
        self._next = state.get("next")


class WithText:
    """Chat batches, each paired with a batch of pretraining windows: ((x, y, seg), (x, y))."""

    def __init__(self, chats: PackedBatches, text: TrainBatches):
        self.chats, self.text = chats, text

    def next_batch(self):
        return self.chats.next_batch(), self.text.next_batch()

    def state_dict(self) -> dict:
        return {"chats": self.chats.state_dict(), "text": self.text.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.chats.load_state_dict(state["chats"])
        self.text.load_state_dict(state["text"])


def text_batches(run: RunDir, rows: int, seq_len: int, seed: int) -> TrainBatches:
    if not run.index_file().is_file():
        raise MyLLMError(f"sft.text_rows = {rows} mixes pretraining text into SFT, but {run.shards} has no shards; "
                         "run `myllm run` first or set sft.text_rows=0")
    run.check_shards()
    return TrainBatches(ShardReader(run.shards, "train"), rows, seq_len, seed=seed)


def sft_loss(model: torch.nn.Module, batch, device: torch.device) -> torch.Tensor:
    x, y, seg = (t.to(device) for t in batch)
    return model(x, y, segments=seg)  # mean cross-entropy over assistant tokens


def sft_text_loss(model: torch.nn.Module, batch, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    chats, (x, y) = batch
    chat_loss = sft_loss(model, chats, device)
    text_loss = model(x.to(device), y.to(device))
    return chat_loss + text_loss, {"chat_loss": chat_loss.item(), "text_loss": text_loss.item()}


def sft(run_dir: RunDir | Path, cfg: RunConfig, data: str | None = None, restart: bool = False,
        show_progress: bool = True, log=print) -> TrainResult:
    seq_len = cfg.seq_len

    def make(model, tok, path, device):
        examples = load_examples(path, tok, seq_len, cfg.sft.overlong, log)
        batches = PackedBatches(examples, cfg.sft.batch_size, seq_len, cfg.sft.seed, tok.pad_id)
        if cfg.sft.text_rows == 0:
            return batches, lambda m, b: sft_loss(m, b, device), lambda b: b[0].numel()
        text = text_batches(RunDir.of(run_dir), cfg.sft.text_rows, seq_len, cfg.sft.seed)
        return (WithText(batches, text), lambda m, b: sft_text_loss(m, b, device),
                lambda b: b[0][0].numel() + b[1][0].numel())

    return run_post_stage(run_dir, cfg, "sft", make, data, restart, show_progress, log, check_file)
