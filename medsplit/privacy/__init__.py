"""Privacy attacks on a split model and the leakage report card: what the cut and its gradients give away.

Never imports ``data_adapters``, ``sites`` or ``dashboard``: the card runs on tensors (synthetic cohorts).
"""

from .card import CardRun, PrivacyCard, attack, raw_inputs
from .labels import LabelLeak, direction_scores, label_leakage, norm_scores
from .metrics import leak_auc, psnr, r2_per_feature, roc_curve, ssim
from .reconstruction import Decoder, ReconstructionResult, reconstruct, score_reconstruction, train_decoder
from .report import render_card
from .tap import Tap, watch_rows

__all__ = ["CardRun", "PrivacyCard", "attack", "raw_inputs", "LabelLeak", "direction_scores", "label_leakage",
           "norm_scores", "leak_auc", "psnr", "r2_per_feature", "roc_curve", "ssim", "Decoder",
           "ReconstructionResult", "reconstruct", "score_reconstruction", "train_decoder", "render_card", "Tap",
           "watch_rows"]
