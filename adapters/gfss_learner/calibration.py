"""Calibrating registered novel classes against the trained ones, on the run's supports.

Imprinted prototypes alone (model.py) are not calibrated against the trained rows: a prototype is the
mean of real embeddings, so it lies closer to the data than a trained weight does, and base training
(DIaM's: novel pixels labelled background) put the novel textures next to the background weight. On
the demo the imprinted rows took nearly every pixel (fold 0: base mIoU 0, harmonic 0).

What is done (VP's recipe, whose novel visual prompts start from support prototypes and are then
fine-tuned, with DIaM's rule that the base knowledge must not move): the classifier rows of the classes
the head was not trained on, initialised by imprinting, and one logit bias per such class are
fine-tuned for `steps` full-batch Adam steps of cross-entropy over all classes on the supports'
embedding grid (stride 8), everything else frozen (backbone, head, background and trained rows). The
targets of the grid cells:
- a cell at least half covered by a support's novel class: that class;
- a cell partly covered by it (less than half): ignored (the class boundary is ambiguous on the grid);
- a cell more than half ignored (label 255, the padding of the protocols' canvas): ignored;
- every other cell: the frozen head's own prediction over background + trained classes. DIaM's
  supports label base pixels as background; taking the frozen prediction instead keeps a base object
  in a support a base object (DIaM's distillation of the old model's output, in its hard form), so the
  novel rows learn to beat background without being pushed into base classes or base classes into
  background.
Full-batch steps on fixed embeddings draw nothing random: the result is a function of the supports
and the head alone (deterministic on a device, like every other computation of the adapter). Chosen
over matching cosine statistics because it uses the supports' negatives (their background and base
objects, the other novel classes' supports) and needs no distributional assumption; it costs
milliseconds, since the supports' embeddings are computed once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fssbench.harness.contract import IGNORE_LABEL

LEARNING_RATE = 0.01


def grid_targets(labels: torch.Tensor, frozen_prediction: torch.Tensor, fitted: list[int]) -> torch.Tensor:
    """Targets [N, h, w] on the embedding grid: `frozen_prediction` [N, h, w] (label indices predicted by
    the frozen rows) overridden from the support labels [N, H, W] (label indices, IGNORE_LABEL ignored);
    `fitted`: the label indices of the classes being fitted (the registered novel classes)."""
    grid = frozen_prediction.shape[-2:]
    target = frozen_prediction.clone()
    ignored = F.interpolate((labels == IGNORE_LABEL).float()[:, None], grid, mode="area")[:, 0] > 0.5
    target[ignored] = IGNORE_LABEL
    for index in fitted:
        cover = F.interpolate((labels == index).float()[:, None], grid, mode="area")[:, 0]
        target[(cover > 0) & (cover < 0.5)] = IGNORE_LABEL
        target[cover >= 0.5] = index
    return target


def calibrate(embedding: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor, fitted: list[int],
              scale: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fine-tune the rows `fitted` of `classifier` [C, D] (the others frozen) and a bias per fitted class
    on the supports' `embedding` [N, D, h, w] (unit norm) and `labels` [N, H, W] (label indices);
    returns the classifier and the bias [C] (0 for the frozen rows)."""
    embedding, classifier = embedding.detach(), classifier.detach()
    fitted_index = torch.tensor(fitted, dtype=torch.long, device=classifier.device)
    frozen = torch.tensor([index for index in range(len(classifier)) if index not in fitted],
                          dtype=torch.long, device=classifier.device)
    with torch.no_grad():
        logits = scale * torch.einsum("ndhw,cd->nchw", embedding, F.normalize(classifier, dim=1))
        target = grid_targets(labels, frozen[logits[:, frozen].argmax(dim=1)], fitted)
    rows = classifier[fitted_index].clone().requires_grad_(True)
    bias = torch.zeros(len(fitted), device=classifier.device, requires_grad=True)
    if steps and (target != IGNORE_LABEL).any():
        optimizer = torch.optim.Adam([rows, bias], lr=LEARNING_RATE)
        for _ in range(steps):
            fitted_logits = scale * torch.einsum("ndhw,cd->nchw", embedding, F.normalize(rows, dim=1))
            loss = F.cross_entropy(logits.index_copy(1, fitted_index, fitted_logits + bias[None, :, None, None]),
                                   target, ignore_index=IGNORE_LABEL)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    calibrated = classifier.index_copy(0, fitted_index, rows.detach())
    return calibrated, torch.zeros(len(classifier), device=classifier.device).index_copy(0, fitted_index, bias.detach())
