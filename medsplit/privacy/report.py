"""The report card as text: one block per cut, one per task, the defenses per site, and what to make of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["render_card", "SSIM_GOAL", "LEAK_AUC_GOAL"]

SSIM_GOAL = 0.2  # a reconstruction at or below this shares little structure with the image
LEAK_AUC_GOAL = 0.6  # a leak AUC at or below this tells labels apart little better than a coin


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("  [within goal]" if ok else "  [LEAKS]")


def render_card(privacy: Mapping[str, Any], metrics: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The ``privacy`` section (and the run's validation metrics) as the text a privacy officer reads."""
    lines = ["PRIVACY REPORT CARD", "=" * 19, ""]
    if metrics:
        lines.append("utility: " + "; ".join(
            f"{t} " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if k.startswith("val_") and v is not None)
            for t, m in sorted(metrics.items())))
        lines.append("")
    lines.append("What leaves each site (cuts), and what a server can rebuild from it:")
    for cut, c in sorted(privacy["cuts"].items()):
        r = c["reconstruction"]
        lines.append(f"  {cut}  ({c['site']} -> {', '.join(c['to'])}, {tuple(c['shape'])} per patient)")
        lines.append(f"    dCor(raw input, cut)        {_f(c['dcor'])}")
        if r["ssim"] is not None:
            lines.append(f"    image reconstruction SSIM   {_f(r['ssim'])}  (mean-image baseline "
                         f"{_f(r['baseline'].get('ssim'))}; goal <= {SSIM_GOAL}){_verdict(r['ssim'] <= SSIM_GOAL)}")
        if r["r2"] is not None:
            lines.append(f"    table reconstruction R²     {_f(r['r2'])}  (0: no better than each column's mean; "
                         "1: every value recovered)")
        lines.append(f"    MSE {_f(r['mse'], 4)} (baseline {_f(r['baseline'].get('mse'), 4)}), "
                     f"PSNR {_f(r['psnr'], 2)} dB (baseline {_f(r['baseline'].get('psnr'), 2)} dB)")
    lines += ["", "Labels:"]
    for task, t in sorted(privacy["labels"].items()):
        if t["shared"]:
            lines.append(f"  {task}: LABELS ARE SENT IN THE CLEAR to {', '.join(t['sent_to'])} "
                         "(this topology computes the loss there); no defense at the cut protects them")
        if t["attackers"]:
            for who, a in sorted(t["attackers"].items()):
                worst = max(v for v in (a["norm_leak_auc"], a["direction_leak_auc"], 0.0) if v is not None)
                lines.append(f"  {task}: gradients received by {who}: norm attack leak AUC "
                             f"{_f(a['norm_leak_auc'])}, direction attack {_f(a['direction_leak_auc'])}"
                             f"{_verdict(worst <= LEAK_AUC_GOAL)}")
        elif not t["shared"]:
            lines.append(f"  {task}: labels stay at their site and no other party receives a gradient of its loss")
        if t.get("note"):
            lines.append(f"  {task}: {t['note']}")
    lines += ["", "Defenses per site:"]
    for site, names in sorted(privacy["defenses"].items()):
        lines.append(f"  {site}: {', '.join(names) if names else 'none'}")
    lines += ["", "How to read it: docs/privacy.md. SSIM near the baseline and leak AUC near 0.5 mean the attack "
                  "learned little; the attacks are the ones implemented here, not every possible one."]
    return "\n".join(lines)
