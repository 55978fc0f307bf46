"""Training-step throughput of the harness on CPU: tiny BERT, one optimizer step per batch.

Three candidates, measured side by side in one process (interleaved blocks of steps, so machine
noise hits all alike), each on its own model and optimizer, fed by a ``DataLoader`` over the same
in-memory examples (batch 32 x seq 64, 10 predictions per sequence as NVIDIA's 20 per 128,
vocabulary 8192 as the ``tiny`` shapes of ``optimizer_step.py``):

- ``harness``: ``ablations.run.train.train`` -- Lightning ``Trainer.fit`` of ``PretrainingModule``
  (NVIDIA's sparse masked-LM head, ``nvlamb``, LR schedule, per-step curves in ``metrics.jsonl``).
  Its steps are timed between consecutive ``on_train_batch_end`` calls; the other candidates run
  inside a callback between blocks, outside those intervals.
- ``plain``: the same model and optimizer (``BertPretraining`` + ``nvlamb`` + the schedule) in a
  plain loop: the reference for Lightning's (and the curves') overhead.
- ``transformers``: ``transformers.BertForPreTraining`` (masked-LM head over every position,
  labels -100 elsewhere) + ``torch.optim.AdamW(fused=True)`` in a plain loop.

Prints median step time and tokens/s (batch x seq_len per step) of each, and the targets:
harness >= 2x transformers' throughput; harness within 5% of the plain loop.

Usage: ``python benchmarks/train_step.py [--rounds 8] [--block 8] [--vocab 8192] [--threads N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from transformers import BertForPreTraining  # noqa: E402

import lamb_variants as lv  # noqa: E402
from ablations.config import RunConfig  # noqa: E402
from ablations.core.status import Status  # noqa: E402
from ablations.run.model import BertPretraining  # noqa: E402
from ablations.run.train import train  # noqa: E402

BATCH, SEQ, PRED = 32, 64, 10


class Examples(Dataset):
    """Random full-length examples in the batch contract (timing only: no structure needed)."""

    def __init__(self, n: int, vocab: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(5, vocab, (n, SEQ), generator=g)
        self.token_type_ids = (torch.arange(SEQ) >= SEQ // 2).long().expand(n, SEQ).clone()
        self.positions = torch.stack(
            [torch.randperm(SEQ - 2, generator=g)[:PRED].sort().values + 1 for _ in range(n)]
        )
        self.ids = torch.randint(5, vocab, (n, PRED), generator=g)
        self.nsp = torch.randint(0, 2, (n,), generator=g)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[i],
            "token_type_ids": self.token_type_ids[i],
            "attention_mask": torch.ones(SEQ, dtype=torch.long),
            "masked_lm_positions": self.positions[i],
            "masked_lm_ids": self.ids[i],
            "masked_lm_weights": torch.ones(PRED),
            "next_sentence_labels": self.nsp[i],
        }


def with_labels(rows: list[dict]) -> dict[str, torch.Tensor]:
    """transformers' format: labels [B, L], -100 except at the masked positions."""
    batch = torch.utils.data.default_collate(rows)
    labels = torch.full_like(batch["input_ids"], -100)
    labels.scatter_(1, batch["masked_lm_positions"], batch["masked_lm_ids"])
    batch["labels"] = labels
    return batch


class Data(L.LightningDataModule):
    def __init__(self, dataset: Examples) -> None:
        super().__init__()
        self.dataset, self.vocab_size = dataset, int(dataset.input_ids.max()) + 1

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=BATCH)


def endless(loader: DataLoader):
    while True:
        yield from loader


class Bench(Callback):
    """Times the harness's steps; between blocks, runs a block of each plain loop."""

    def __init__(self, config: RunConfig, dataset: Examples, vocab: int, block: int) -> None:
        self.block, self.t = block, None
        self.times: dict[str, list[float]] = {"harness": [], "plain": [], "transformers": []}
        phase = config.phases[0]
        schedule = lv.PolyWarmup.from_proportion(phase.steps, phase.warmup)

        plain = BertPretraining(config.model, vocab)
        opt = lv.create("nvlamb", lv.nvidia_param_groups(plain.named_parameters()), lr=phase.lr)
        plain_sched = lv.start_phase(opt, schedule, lr=phase.lr)
        plain_data = endless(DataLoader(dataset, batch_size=BATCH))

        def plain_step() -> None:
            out = plain(next(plain_data))
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            plain_sched.step()

        hf = BertForPreTraining(plain.config)
        adamw = torch.optim.AdamW(hf.parameters(), lr=phase.lr, weight_decay=0.01, fused=True)
        hf_sched = lv.start_phase(adamw, schedule, lr=phase.lr)
        hf_data = endless(DataLoader(dataset, batch_size=BATCH, collate_fn=with_labels))

        def hf_step() -> None:
            b = next(hf_data)
            out = hf(
                input_ids=b["input_ids"],
                attention_mask=b["attention_mask"],
                token_type_ids=b["token_type_ids"],
                labels=b["labels"],
                next_sentence_label=b["next_sentence_labels"],
            )
            out.loss.backward()
            adamw.step()
            adamw.zero_grad(set_to_none=True)
            hf_sched.step()

        self.loops = {"plain": plain_step, "transformers": hf_step}
        for step in self.loops.values():  # warm up
            for _ in range(3):
                step()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        n = trainer.global_step
        if self.t is not None and n > 3:  # Lightning's first steps warm up
            self.times["harness"].append(now - self.t)
        if n > 3 and n % self.block == 0:
            for name, step in self.loops.items():
                for _ in range(self.block):
                    t = time.perf_counter()
                    step()
                    self.times[name].append(time.perf_counter() - t)
            now = time.perf_counter()
        self.t = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="blocks per candidate")
    parser.add_argument("--block", type=int, default=8, help="steps per block")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    steps = args.block * (args.rounds + 1)
    config = RunConfig.from_dict(
        {
            "model": {"size": "tiny"},
            "data": {"vocab_size": args.vocab},
            "phases": [
                {
                    "steps": steps,
                    "global_batch": BATCH,
                    "micro_batch": BATCH,
                    "seq_len": SEQ,
                    "max_predictions": PRED,
                    "lr": 6e-3,
                    "warmup": 0.2843,
                }
            ],
            "log": {"val_batches": 0, "layer_every": 50},
            "checkpoint_every": steps + 1,  # no checkpoint inside the timed steps
        }
    )
    dataset = Examples(BATCH * 16, args.vocab)
    L.seed_everything(0, verbose=False)
    bench = Bench(config, dataset, args.vocab, args.block)
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(config, run_dir, Data(dataset), callbacks=[bench])
    assert result["status"] == Status.COMPLETE, result

    ms = {k: 1e3 * statistics.median(v) for k, v in bench.times.items()}
    print(
        f"\ntiny BERT (2 x 128), vocab {args.vocab}, batch {BATCH} x seq {SEQ}, {PRED} predictions;"
        f" torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds x {args.block} steps"
    )
    print(f"{'candidate':14s} {'median ms':>10s} {'tokens/s':>10s} {'x transformers':>15s}")
    for name, t in ms.items():
        tokens = BATCH * SEQ / (t / 1e3)
        print(f"{name:14s} {t:10.1f} {tokens:10.0f} {ms['transformers'] / t:15.2f}")
    speedup = ms["transformers"] / ms["harness"]
    overhead = ms["harness"] / ms["plain"] - 1
    print(
        f"target harness >= 2x transformers throughput: {speedup:.2f}x -> "
        f"{'met' if speedup >= 2 else 'NOT met'}"
    )
    print(
        f"target Lightning overhead <= 5% vs plain loop: {100 * overhead:+.1f}% -> "
        f"{'met' if overhead <= 0.05 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
