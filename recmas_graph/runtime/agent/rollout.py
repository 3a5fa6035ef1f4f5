"""The latent rollout: an agent thinks for ``m`` steps in its own hidden space (docs/semantics.md).

h is the last-layer (post final norm) hidden state at the last position; each step appends
inner(h) as the next input embedding and runs one more position. As in the reference, thought t
is the hidden state *before* inner(h) is appended, so thought 0 is the prompt's last hidden state
and ``m`` thoughts cost ``m - 1`` appended positions (the reference's last forward pass, whose
output it never reads, is skipped). The KV cache is reused across steps; ``use_cache=False`` is the
reference algorithm (full recompute every step), kept for tests and benchmarks.

The rollout is differentiable: run it under ``torch.inference_mode()`` for inference (as
:meth:`recmas_graph.runtime.RecursiveSystem.run` does) and with grad for training, where the
gradient reaches the inner link and whatever produced the prompt embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from .forward import backbone_forward, position_ids_from_mask
from .prefix import prefill
from .prompts import PromptBatch

__all__ = ["latent_rollout", "apply_link"]


def apply_link(link: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a link on its own device: (..., H_in) -> (..., H_out). The built-in links compute in their
    own dtype and return ``x``'s (as the reference casts each adapter's output to the model's)."""
    param = next(link.parameters(), None)
    if param is not None and x.device != param.device:
        x = x.to(param.device)
    return link(x)


def latent_rollout(backbone: nn.Module, inner: nn.Module, prompt: PromptBatch, steps: int, *,
                   use_cache: bool = True) -> torch.Tensor:
    """Think for ``steps`` latent steps; return the thoughts H_out of shape (B, steps, H)."""
    embeds, mask = prompt.embeds, prompt.mask
    B, _, H = embeds.shape
    if steps == 0:
        return embeds.new_zeros(B, 0, H)
    if use_cache:  # reusing the KV of a prefix an earlier pass of this model computed, where it can
        def forward(e: torch.Tensor, m: torch.Tensor, p: torch.Tensor, c: object) -> tuple[torch.Tensor, object]:
            return backbone_forward(backbone, e, m, p, cache=c, use_cache=True)
        hidden, cache, mask, positions = prefill(forward, prompt, backbone.config)  # (B, T', H), ..., (B, T'')
    else:
        positions = position_ids_from_mask(mask)  # (B, T)
        hidden, cache = backbone_forward(backbone, embeds, mask, positions)
    h = hidden[:, -1]  # (B, H)
    del hidden
    thoughts = [h]
    next_pos = positions[:, -1:] + 1  # (B, 1)
    for _ in range(steps - 1):
        e = apply_link(inner, h).to(device=embeds.device, dtype=embeds.dtype)[:, None]  # (B, H) -> (B, 1, H)
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)  # (B, T + t)
        if use_cache:
            hidden, cache = backbone_forward(backbone, e, mask, next_pos, cache=cache, use_cache=True)
        else:
            embeds = torch.cat([embeds, e], dim=1)  # (B, T + t, H)
            hidden, _ = backbone_forward(backbone, embeds, mask, position_ids_from_mask(mask))
        h = hidden[:, -1]  # (B, H)
        del hidden
        next_pos = next_pos + 1
        thoughts.append(h)
    return torch.stack(thoughts, dim=1)  # (B, steps, H)
