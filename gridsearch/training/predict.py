"""A trained network's outputs on a set of images: the one computation behind the test evaluation, the validation
of each epoch, the robustness suite, committees, reports and the web app, so that the same weights give the same
predictions, and the same error count, wherever they are run.

Images are uint8 ``(N, C, H, W)`` as the data splits hold them, scaled to [0, 1]; they go through the network in
batches of ``BATCH_SIZE`` in eval mode, under the trial's own precision (bfloat16 autocast for ``amp: bf16``) and
with the memory format its network was built with (``channels_last`` is set on the model by ``build_model``; the
inputs stay contiguous, as in training). Logits come back in float32. The batch size is fixed because a batch of
another size may run another kernel, whose float order differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BATCH_SIZE = 1000


@torch.no_grad()
def logits(model: nn.Module, images: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Float32 logits ``(N, classes)`` of ``model`` (put in eval mode) on uint8 ``images``, on their device."""
    model.eval()
    outputs = []
    for start in range(0, len(images), BATCH_SIZE):
        batch = images[start : start + BATCH_SIZE].float().div_(255)
        with torch.autocast(batch.device.type, torch.bfloat16, enabled=bf16):
            outputs.append(model(batch).float())
    return torch.cat(outputs) if outputs else torch.zeros(0, 0, device=images.device)


def bf16_emulated(device: torch.device) -> bool:
    """Whether bfloat16 autocast on ``device`` is emulated: a CPU where oneDNN cannot run bfloat16 (no AVX-512, as
    an AVX2-only CPU), so that PyTorch's reference convolution runs instead, several times slower than float32
    (LeNet-5-3 on an AVX2 CPU: 6-8x, ``benchmarks/results/2026-12-05-cpu-robustness.md``)."""
    return device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported()


def mean_loss(outputs: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean cross-entropy of the logits ``outputs`` against ``labels``, summed batch by batch."""
    total = torch.zeros((), device=outputs.device)
    for start in range(0, len(labels), BATCH_SIZE):
        total += F.cross_entropy(
            outputs[start : start + BATCH_SIZE], labels[start : start + BATCH_SIZE], reduction="sum"
        )
    return total.item() / max(len(labels), 1)
