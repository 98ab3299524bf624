"""Misbehaving adapters, registered by tests to check that the harness catches them."""

import torch

from fssbench.harness.contract import FssAdapter, GfssAdapter, WeightSpec


class _Base(FssAdapter):
    description = "test adapter"

    def setup(self, context):
        pass


class WrongShape(_Base):
    def predict(self, batch):
        return torch.zeros(1, 7, 7)


class NaNs(_Base):
    def predict(self, batch):
        return torch.full(batch.query_images[:, 0].shape, float("nan"))


class OutOfRange(_Base):
    def predict(self, batch):
        return batch.query_images[:, 0] * 3 - 1


class NeedsCheckpoint(_Base):
    weights = (WeightSpec("model", "model.safetensors", "https://example.org/model"),)
    supports_random_init = False

    def predict(self, batch):
        return batch.query_images[:, 0] * 0


class Flaky(_Base):
    """An imperfect, deterministic method that can be told to be interrupted at its n-th call."""

    interrupt_at: int | None = None
    calls = 0

    def predict(self, batch):
        Flaky.calls += 1
        if Flaky.calls == Flaky.interrupt_at:
            raise KeyboardInterrupt
        return (batch.query_images[:, 1] > 0.45).float()


class Thresholded(_Base):
    """Foreground where the green channel exceeds an option; declares backbones it only records."""

    option_defaults = {"threshold": 0.45, "invert": False}
    backbones = ("efficientnet-lite0", "efficientnet-lite1")

    def predict(self, batch):
        foreground = batch.query_images[:, 1] > self.options["threshold"]
        return (~foreground if self.options["invert"] else foreground).float()


class GfssFirstNovel(GfssAdapter):
    """Generalized FSS: the truth, except that every base pixel is called the first novel class;
    can be told to be interrupted at its n-th call."""

    description = "test adapter"
    needs_query_ground_truth = True
    interrupt_at: int | None = None
    calls = 0

    def setup(self, context):
        pass

    def adapt(self, labels, supports):
        self.first_novel = 1 + len(labels.base)
        assert set(supports.labels.unique().tolist()) <= {0, 255, *range(self.first_novel, labels.size)}

    def segment(self, images, truth=None):
        GfssFirstNovel.calls += 1
        if GfssFirstNovel.calls == GfssFirstNovel.interrupt_at:
            raise KeyboardInterrupt
        labels = truth.masked_fill(truth == 255, 0)
        return labels.masked_fill((labels > 0) & (labels < self.first_novel), self.first_novel)


class Crashes(_Base):
    """Fails the way a real model can (not with one of fssbench's errors) at its third call."""

    calls = 0

    def predict(self, batch):
        Crashes.calls += 1
        if Crashes.calls == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return batch.query_images[:, 0] * 0


class PerShotOracle(_Base):
    """Returns the query ground truth once per support for the harness to vote over."""

    shot_merge = "vote"
    needs_query_ground_truth = True

    def predict(self, batch):
        return batch.query_masks[:, None].expand(-1, batch.support_images.shape[1], -1, -1)


class Reporting(_Base):
    """Reports how many batches this process predicted, and nothing when it predicted none."""

    def __init__(self, options=None, backbone=None):
        super().__init__(options, backbone)
        self.batches = 0

    def predict(self, batch):
        self.batches += 1
        return (batch.query_images[:, 1] > 0.45).float()

    def report(self):
        return {"batches": self.batches} if self.batches else {}
