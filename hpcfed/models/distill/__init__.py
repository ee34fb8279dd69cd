"""Distil the ConSE teacher (EfficientNet-Lite0 + all-MiniLM-L6-v2) into a small open_clip CLIP.

Stages: `cache` (render training images, augmented views, teacher targets), `train` (student), `evaluate`
(zero-shot table through open_clip.create_model_and_transforms(..., pretrained=<file>)). CLI:
`python -m hpcfed.models.distill {cache,train,evaluate} ...`; `make tiny-clip` runs all three.
"""

ARCH = "hpcfed-tinyclip-vit-p12-96-w192"
WEIGHTS = "hpcfed-tinyclip-vit-p12-96-w192.pt"


def student_image_size() -> int:
    """The input size of the student's image tower, read from its open_clip config (the one place it is set)."""
    import json

    from hpcfed.models import CONFIG_DIR

    return json.loads((CONFIG_DIR / f"{ARCH}.json").read_text())["vision_cfg"]["image_size"]
