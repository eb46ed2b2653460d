"""Inference: one case from CT to follow-up and predictions.

``pipeline`` runs a case (anatomy, crop, conditions, sampling, heads, measurements);
``sampling`` the DDPM/DDIM loops with guidance; ``fused_denoiser``, ``precision`` and
``memory_reuse`` make sampling fast on a CPU. Import from the modules themselves: this file
imports nothing, so that ``models`` can use the fused denoiser without a cycle.
"""
