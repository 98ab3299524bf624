"""The oracle: returns the query ground truth. It must score exactly 100 mIoU; anything else means the
pipeline (loading, resizing, ignore handling, scoring) is broken."""

from __future__ import annotations

import torch

from fssbench.harness.contract import (IGNORE_LABEL, EpisodeBatch, FssAdapter, GfssAdapter, GfssLabelSpace, GfssSupportSet,
                                       SetupContext)


class OracleAdapter(FssAdapter, GfssAdapter):
    description = "returns the query ground truth; proves the pipeline (must score 100 mIoU)"
    support_annotations = frozenset({"mask", "box", "scribble", "none", "text"})
    needs_query_ground_truth = True

    def setup(self, context: SetupContext) -> None:
        pass

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        return batch.query_masks

    def adapt(self, labels: GfssLabelSpace, supports: GfssSupportSet) -> None:
        pass

    def segment(self, images: torch.Tensor, truth: torch.Tensor | None = None) -> torch.Tensor:
        return truth.masked_fill(truth == IGNORE_LABEL, 0)  # ignored pixels are not scored
