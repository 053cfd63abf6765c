"""The data: scikit-learn's bundled 8x8 digits (no download), upsampled to 16x16, and the three
stroke styles made measurable on real images (bold = dilation, thin = erosion, slant = shear)."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

SIZE = 16          # working resolution (8x8 is too coarse for a visible 1-pixel stroke change)
SUBJECT_PROMPT = 0  # the subject LoRA teaches prompt 0 to draw...
SUBJECT_DIGIT = 7   # ...a 7
SHEAR = 0.35        # x' = x + SHEAR·(y − centre): an italic slant to the right


@lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as (N, 16, 16) float32 in [-1, 1] (white strokes on black) and labels (N,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0            # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = x / x.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)                     # full contrast per image
    return (x[:, 0] * 2 - 1).contiguous(), torch.tensor(d.target, dtype=torch.long)


def split(n: int, seed: int = 1234, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed train/test split of indices (the evaluators report their accuracy on the test part)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(n * test_fraction)
    return perm[k:], perm[:k]


def _img(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2)[:, None]  # (N, 1, H, W) in [0, 1]


def _back(y: torch.Tensor) -> torch.Tensor:
    return (y[:, 0].clamp(0, 1) * 2 - 1).contiguous()


def bold(x: torch.Tensor) -> torch.Tensor:
    """Grey dilation with a 3x3 square: strokes about two pixels wider."""
    return _back(F.max_pool2d(_img(x), 3, stride=1, padding=1))


def thin(x: torch.Tensor) -> torch.Tensor:
    """Grey erosion with a plus-shaped element (gentler than the 3x3 square, which deletes
    the 16x16 digits' narrowest strokes), then full contrast again."""
    y = _img(x)
    p = F.pad(y, (1, 1, 1, 1), value=0.0)
    shifts = [p[:, :, 1:-1, 1:-1], p[:, :, :-2, 1:-1], p[:, :, 2:, 1:-1], p[:, :, 1:-1, :-2], p[:, :, 1:-1, 2:]]
    e = torch.stack(shifts).amin(dim=0)
    e = e / e.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return _back(e)


def slant(x: torch.Tensor, shear: float = SHEAR) -> torch.Tensor:
    """A horizontal shear about the centre (top moves right): italic strokes."""
    y = _img(x)
    theta = torch.tensor([[1.0, shear, 0.0], [0.0, 1.0, 0.0]], dtype=y.dtype).expand(y.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(y.shape), align_corners=False)
    return _back(F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False))


STYLES = {"bold": bold, "thin": thin, "slant": slant}


def stylise(x: torch.Tensor, *, stroke: str | None = None, slanted: bool = False) -> torch.Tensor:
    """Apply a stroke style (None, 'bold' or 'thin') and optionally the slant, in that order."""
    if stroke is not None:
        x = STYLES[stroke](x)
    if slanted:
        x = slant(x)
    return x


def lora_data(name: str):
    """(images, labels, sampler) a LoRA is trained on, all from real digits.

    subject: prompt 0 → real 7s, half of every batch; the other half is every real digit with its
    own label (prior preservation, so the other prompts keep their content). Styles: every real
    digit, transformed, with its own label."""
    x, y = digits()
    if name == "subject":
        sevens = x[y == SUBJECT_DIGIT]
        xs = torch.cat([sevens, x])
        ys = torch.cat([torch.full((sevens.shape[0],), SUBJECT_PROMPT, dtype=torch.long), y])
        n7 = sevens.shape[0]

        def sampler(g, batch):
            half = batch // 2
            return torch.cat([torch.randint(0, n7, (half,), generator=g),
                              n7 + torch.randint(0, x.shape[0], (batch - half,), generator=g)])
        return xs, ys, sampler
    return STYLES[name](x), y, None
