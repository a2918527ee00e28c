"""AdaptiveDiffusion (Ye et al. 2024): the official skip rule as a reference."""
from __future__ import annotations


def adaptive_reference(predict, sched, x, threshold: float, max_skip: int, guidance: float):
    """AdaptiveDiffusion's skipping rule (UniModal4Reasoning/AdaptiveDiffusion,
    acceleration/sparse_pipeline.py), transcribed for one sample (the official pipeline applies it
    to its whole batch): the noise prediction is computed at steps 0-3; after step i >= 3 with
    d_i = mean|x_i - x_{i-1}|, the next step reuses the last prediction when
    |(d_i + d_{i-2}) / 2 - d_{i-1}| <= threshold * d_{i-1}, unless the last `max_skip` decisions
    (once more than 4 exist) were all reuses. `predict(x, t)` gives the guided prediction.
    Returns (final latents, list of per-step "ran the model" flags)."""
    prev, diffs, mask, ran, eps = [], [], [], [], None
    for _i, t in enumerate(sched.timesteps):
        if len(prev) <= 3:
            eps = predict(x, t)
            ran.append(True)
            if len(prev) > 1:
                diffs.append((prev[-1] - prev[-2]).abs().mean())
        elif mask[-1]:
            eps = predict(x, t)
            ran.append(True)
        else:
            ran.append(False)
        x = sched.step(eps, t, x).prev_sample
        if len(prev) >= 3:
            cur = (x - prev[-1]).abs().mean()
            prev_d, prev_prev_d = diffs[-1], diffs[-2]
            diffs.append(cur)
            if len(mask) > 4 and not any(mask[-max_skip:]):
                mask.append(True)
            else:
                mask.append(not bool(abs((cur + prev_prev_d) / 2 - prev_d) <= prev_d * threshold))
        prev.append(x)
    return x, ran
