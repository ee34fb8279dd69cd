"""CLI of the tiny-CLIP distillation (see hpcfed.models.distill)."""

from __future__ import annotations

import argparse
import time

import torch


def weight(text: str) -> float:
    """A loss weight: a number >= 0 (a negative one would reward the student for moving away from its teacher)."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a loss weight: give a number >= 0, e.g. 1.0 (0 turns the "
                                         f"term off)")
    return value


def pixels(text: str) -> int:
    """An image size in pixels: a whole number > 0."""
    value = int(text) if text.strip().isdigit() else 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an image size: give a whole number of pixels > 0 (e.g. "
                                         f"--size 96, --teacher-res 160; --size left out is the student's input size)")
    return value


def count(text: str) -> int:
    """A number of views: a whole number >= 1 (view 0 is the clean image)."""
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of views: give a whole number >= 1, e.g. 3 "
                                         f"(the clean image and 2 augmented views)")
    return value


def main(argv: list[str] | None = None) -> int:
    from hpcfed.models.distill.train import CAPTION_WEIGHT, RELATION_WEIGHT

    ap = argparse.ArgumentParser(prog="python -m hpcfed.models.distill")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="render training images and cache teacher targets")
    c.add_argument("--out", default="/tmp/tinyclip/cache.pt")
    c.add_argument("--size", type=pixels, default=None, help="image size (default: the student's input size)")
    c.add_argument("--views", type=count, default=2)
    c.add_argument("--teacher-res", type=pixels, default=160)
    t = sub.add_parser("train", help="train the student on a cache")
    t.add_argument("--cache", default="/tmp/tinyclip/cache.pt")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--minutes", type=float, default=None, help="stop (and save) after this wall time")
    t.add_argument("--batch", type=int, default=96)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--relation-weight", type=weight, default=RELATION_WEIGHT, help="relational image loss weight")
    t.add_argument("--caption-weight", type=weight, default=CAPTION_WEIGHT, help="weight of the caption alignment loss")
    e = sub.add_parser("evaluate", help="zero-shot table of a checkpoint (and optionally the teacher)")
    e.add_argument("--weights", required=True)
    e.add_argument("--teacher", action="store_true")
    e.add_argument("--json", default=None)
    e.add_argument("--sets", nargs="*", default=None)
    k = sub.add_parser("card", help="refresh the zero-shot table in the model card from evaluate --json")
    k.add_argument("--eval", nargs="+", required=True)
    k.add_argument("--out", required=True)
    for p in (c, t, e, k):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.cmd == "cache":
        from hpcfed.models.distill import student_image_size
        from hpcfed.models.distill.cache import build_cache

        size = student_image_size() if args.size is None else args.size
        build_cache(args.out, size, args.views, args.teacher_res, args.seed)
    elif args.cmd == "train":
        from hpcfed.models.distill.train import train

        train(args.cache, args.out, args.steps, args.batch, args.lr, args.seed, args.minutes,
              args.relation_weight, args.caption_weight)
    elif args.cmd == "card":
        from hpcfed.models.distill.card import write_card

        write_card(args.eval, args.out)
    else:
        from hpcfed.models.distill.evaluate import evaluate

        evaluate(args.weights, args.teacher, args.json, args.sets)
    print(f"{args.cmd} done in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
