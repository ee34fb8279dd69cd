"""Stage 2: train the student open_clip CLIP on the cached teacher targets.

Image loss per view: (1 - cos(student, teacher ConSE embedding of that same view)) + KL between the two embeddings'
softmax similarities over a fixed bank of MiniLM concept embeddings (tau = 0.05). The cosine term pulls the vector
into place; the KL term matches the ranking over concepts, which is what zero-shot classification reads.
Caption loss per captioned image (emoji names, Openclipart file-name words): cross-entropy of the image among
the MiniLM embeddings of all distinct captions (tau = 0.05), i.e. alignment to a locked text tower as in LiT.
Without it the image tower barely moved from the mean ConSE target in 500 steps (top-1 at chance, half of all
predictions on one class): ConSE targets of drawings are alike, captions are not.
Relation loss per view: each student embedding must pick out its own view's teacher target among the batch's
targets, with the teacher's own similarities between them as the soft answer (relational distillation). ConSE
targets all lie in a narrow cone (1 - cos to their mean is 0.23), so the cosine term alone is met by the mean, and
with the caption term pulling elsewhere the student sat at 1 - cos = 0.45 for the whole run, worse than that
constant; a constant scores nothing here.
Text loss per corpus sentence: the same two terms against MiniLM.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hpcfed.models.distill import ARCH

TAU = 0.05
KL_WEIGHT = 1.0
CAPTION_WEIGHT = 1.0
RELATION_WEIGHT = 1.0
VISUAL_LR_SCALE = 0.3
WARMUP = 300  # a ViT trained from scratch at lr 1e-3 needs a gentle start
OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]


def pair_loss(s: torch.Tensor, t: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = F.normalize(s, dim=-1)
    cos = (1 - (s * t).sum(-1)).mean()
    kl = F.kl_div((s @ bank.T / TAU).log_softmax(-1), (t @ bank.T / TAU).log_softmax(-1), log_target=True,
                  reduction="batchmean")
    return cos, kl


def relation_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    s = F.normalize(s, dim=-1)
    return F.kl_div((s @ t.T / TAU).log_softmax(-1), (t @ t.T / TAU).log_softmax(-1), log_target=True,
                    reduction="batchmean")


def encode_text_short(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """model.encode_text on tokens cut after the batch's longest sentence: the causal mask means no position sees a
    later one, so the result equals the full 32-token pass at a fraction of the cost (corpus sentences are short)."""
    from open_clip.transformer import text_global_pool

    n = int((tokens != 0).sum(1).max())
    tokens = tokens[:, :n]
    x = model.token_embedding(tokens) + model.positional_embedding[:n]
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    return text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None)) \
        @ model.text_projection


def save_fp16(model: torch.nn.Module, path: str | Path) -> None:
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)


def train(cache_path: str, out: str, steps: int, batch: int, lr: float, seed: int,
          minutes: float | None = None, relation_weight: float = RELATION_WEIGHT,
          caption_weight: float = CAPTION_WEIGHT) -> None:
    import open_clip

    from hpcfed.models import register_hpcfed_configs

    torch.manual_seed(seed)
    register_hpcfed_configs()
    cache = torch.load(cache_path, weights_only=False)
    images, img_t = cache["images"], cache["image_targets"].float()  # [V, N, H, W, 3] uint8, [V, N, 384]
    bank, txt_t = cache["bank"].float(), cache["text_targets"].float()
    caption_index, caption_bank = cache["caption_index"], cache["caption_bank"].float()
    tokens = open_clip.get_tokenizer(ARCH)(cache["corpus"])
    views, n = img_t.shape[:2]
    model = open_clip.create_model(ARCH)
    size = model.visual.image_size[0]
    if images.shape[2] != size:
        raise SystemExit(f"{cache_path} holds {images.shape[2]} px images but {ARCH} takes {size} px: rebuild it with "
                         f"`python -m hpcfed.models.distill cache --size {size} --out {cache_path}`")
    model.train()
    # The ViT from scratch stalled at lr 1e-3 in two runs (image loss flat once warm-up ended; the text tower
    # learnt fine), so the image tower gets a smaller rate.
    visual = [p for name, p in model.named_parameters() if name.startswith("visual.")]
    text = [p for name, p in model.named_parameters() if not name.startswith("visual.") and name != "logit_scale"]
    opt = torch.optim.AdamW([{"params": visual, "scale": VISUAL_LR_SCALE}, {"params": text, "scale": 1.0}], lr=lr,
                            weight_decay=0.05, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(seed)
    total, t0 = steps, time.time()
    for step in range(1, 10**9):
        if step > total:
            break
        frac = (step - WARMUP) / max(1, total - WARMUP)
        for group in opt.param_groups:
            shape = step / WARMUP if step <= WARMUP else 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
            group["lr"] = group["scale"] * lr * shape
        idx = torch.randint(0, n, (batch,), generator=g)
        v = torch.randint(0, views, (batch,), generator=g)
        x = images[v, idx].permute(0, 3, 1, 2).float() / 255
        flip = torch.rand(batch, generator=g) < 0.5  # a mirror image has (almost) the same teacher target
        x[flip] = x[flip].flip(-1)
        x = (x - OPENAI_MEAN) / OPENAI_STD
        ti = torch.randint(0, len(tokens), (batch,), generator=g)
        image_emb = model.encode_image(x)
        target = img_t[v, idx]
        ci, ki = pair_loss(image_emb, target, bank)
        ri = relation_loss(image_emb, target)
        ct, kt = pair_loss(encode_text_short(model, tokens[ti]), txt_t[ti], bank)
        # Locked-text alignment (as LiT): each captioned image classified among all captions in MiniLM space.
        cap = caption_index[idx]
        has = cap >= 0
        cc = F.cross_entropy(F.normalize(image_emb[has], dim=-1) @ caption_bank.T / TAU, cap[has])
        loss = ci + KL_WEIGHT * ki + relation_weight * ri + ct + KL_WEIGHT * kt + caption_weight * cc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step == 30 and minutes:  # fit the cosine schedule to the wall-time budget
            rate = step / (time.time() - t0)
            total = min(steps, int(minutes * 60 * rate))
            print(f"{rate:.2f} it/s -> {total} steps in {minutes} min", flush=True)
        if step % 50 == 0 or step == total:
            print(f"step {step}/{total} {time.time() - t0:.0f}s img cos {ci:.3f} kl {ki:.3f} rel {ri:.3f} "
                  f"caption {cc:.3f} | txt cos {ct:.3f} kl {kt:.3f}", flush=True)
        if step % 500 == 0:
            save_fp16(model, Path(out).with_suffix(f".step{step}.pt"))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))  # CLIP's trained value, for downstream fine-tuning
    save_fp16(model, out)
    print(f"saved {out}: {sum(p.numel() for p in model.parameters())} params, {step - 1} steps, "
          f"{time.time() - t0:.0f} s", flush=True)
