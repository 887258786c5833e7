"""Reproduce the pretrained policy shipped in the package (``--agent pretrained``).

Pretrains MaskablePPO on every task of the ``classification`` suite with the suite's pretraining
budget and seed 0, then copies the policy and its card into ``loss_rl/pretrained/`` as
``classification.zip`` / ``classification.json`` (the card also goes to ``classification.md``).

Usage::

    python scripts/pretrain_default.py [--budget N] [--out results]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "loss_rl" / "pretrained"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default="classification")
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exclude", nargs="*", default=[], help="tasks left out of pretraining")
    ap.add_argument("--out", type=Path, default=Path("results"))
    args = ap.parse_args()

    from loss_rl.agents import AGENT_FILE
    from loss_rl.agents.cards import CARD_JSON, CARD_MD
    from loss_rl.presets import load_suite
    from loss_rl.pretrain import pretrain

    kind = load_suite(args.suite).kind
    t0 = time.perf_counter()
    command = (f"python scripts/pretrain_default.py --suite {args.suite} --seed {args.seed}"
               + (f" --budget {args.budget}" if args.budget else "")
               + (f" --exclude {' '.join(args.exclude)}" if args.exclude else ""))  # fmt: skip
    folder = pretrain(args.suite, "maskable_ppo", budget=args.budget, seed=args.seed,
                      exclude=args.exclude, out=args.out, command=command)  # fmt: skip
    TARGET.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / AGENT_FILE, TARGET / f"{kind}.zip")
    shutil.copyfile(folder / CARD_JSON, TARGET / f"{kind}.json")
    shutil.copyfile(folder / CARD_MD, TARGET / f"{kind}.md")
    print(f"pretrained in {time.perf_counter() - t0:.0f} s: {folder}")
    print((folder / CARD_MD).read_text())
    print(f"shipped as {TARGET / (kind + '.zip')}")


if __name__ == "__main__":
    main()
