"""GSM (Generalizing Semantic Mining): a training-free booster for affinity-based few-shot segmentation.

GSM (Xiao et al., see ../shared/papers/gsm.txt; no official code) wraps a method written as the
three steps of fssbench.adapters.affinity and runs steps 1-3 a second time with a better reference set:

- Target Semantic Reusing (TSR): the query joins the references with a proxy mask (m_pos, m_neg)
  (Eq. 1). Without QSM the proxy is the first pass's prediction m_pred and its complement.
- Query-specific Semantic Modeling (QSM): the query's own feature similarity C_self (Eq. 2), a
  Gaussian spatial kernel K (Eq. 3) and a region similarity D over edge-split regions (Eqs. 4-5)
  form the graph E = C_self * (K + D) * exp(S+ - S-) (Eq. 6); spectral clustering into `clusters`
  regions (Eq. 7), the region similarity recomputed over those regions and a binary spectral
  clustering (Eq. 8) give m_qsm; m_pos = m_qsm & m_pred and m_neg = ~m_qsm & ~m_pred (Eq. 9).
- Representative Re-weighting (RR): per reference a foreground and a background prototype
  (Eq. 10); each reference's mean cosine similarity to the others (Eqs. 11-12), a softmax over
  references (Eq. 13), and the references' affinities combined with these weights (Eq. 14).
Each module is an option (`tsr`, `qsm`, `rr`), so the paper's Table 3 is a set of runs; with all
three off the output is the base method's. QSM only builds TSR's proxy mask, so `qsm` without
`tsr` is refused rather than silently ignored.

Where the paper is silent or loose, this implementation chooses (and the options expose):
- Eq. 14 divides a softmax-weighted sum by k+1; that would shrink S+ and S- (and change
  exp(S+ - S-) and any threshold on them) even with uniform weights, so the weighted sum itself is
  used: uniform weights give back step 1's mean. The base method decides where weights apply
  (protonet combines prototypes, affinity-sam affinity maps). References whose foreground (or
  background) mask is empty, e.g. a proxy with an empty m_pos, get weight 0 for that component.
- Eq. 12's mean runs over the other references; with one reference its weight is 1, so RR
  changes nothing in 1-shot without TSR (the paper's Table 3, rows A and D).
- C_self is the cosine similarity clamped at 0: spectral clustering needs non-negative weights.
  E is directed (row i scaled by exp(S+_i - S-_i)); Ng et al.'s clustering is for undirected
  graphs, so it runs on (E + E^T) / 2.
- The edge operator is the Sobel magnitude of the grey query image, area-pooled to the QSM grid;
  the cells above its `edge_quantile` quantile are edges, the 8-connected components of the other
  cells are the regions R, and edge cells join the region that reaches them first when regions
  grow cell by cell. The paper's "refine by splitting or merging" is left to the clustering.
- `sigma` is in units of the QSM grid's longer side, `clusters` (m of Eq. 7) is 8: the paper's
  main text gives no values. In the binary clustering the foreground cluster is the one with the
  higher mean S+ - S-. k-means starts from the pixel with the highest S+ - S- and farthest-point
  seeds and runs a fixed number of Lloyd steps, so the result is deterministic.
- The second pass reuses the first pass's image encodings (backbone features, SAM embeddings): only
  steps 1-3 run again, as the paper's timing note describes.

Efficiency: QSM works on a grid whose longer side is at most `qsm_size` (the base's features are
area-pooled when larger), so every (h*w)^2 matrix is at most qsm_size^4 floats, and the spectral
embedding is a dense `torch.linalg.eigh`, batched over the B queries, of that n x n normalized
affinity. Dense eigh was chosen over torch.lobpcg: lobpcg is not batched, needs n >= 3 * clusters and
took 2.7 s at n = 2500 (protonet's full 50x50 stride-8 grid at 400x400, where dense eigh took 14 s)
on the project's 2-core CPU, while dense eigh takes about 0.05 s at n = 625 (that grid pooled to
25x25, gsm+protonet's default) and about 1 s at n = 1369 (DINOv2's 37x37 grid, gsm+affinity-sam's
default). Affinities, regions, clustering and k-means are tensor operations on the run's device;
only the per-image relabelling of regions loops over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from fssbench.harness.contract import EpisodeBatch, FssAdapter, OptionValue, SetupContext
from fssbench.adapters.affinity import Affinity, AffinityAdapter, References, reference_prototypes
from fssbench.adapters.affinity_sam import AffinitySamAdapter
from fssbench.adapters.protonet import ProtoNetAdapter
from fssbench.harness.errors import UsageError

GSM_OPTION_DEFAULTS = {
    "tsr": True,  # Target Semantic Reusing: the query joins the references with a proxy mask
    "qsm": True,  # Query-specific Semantic Modeling: the proxy mask from spectral clustering
    "rr": True,  # Representative Re-weighting of the references
    "clusters": 8,  # m, the regions of the first spectral clustering (Eq. 7)
    "sigma": 0.1,  # width of the Gaussian spatial kernel K (Eq. 3), a fraction of the QSM grid's longer side
    "edge_quantile": 0.75,  # QSM-grid cells with a stronger edge response are edges (Eq. 4)
}
KMEANS_STEPS = 30
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
GREY = torch.tensor([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class GsmTrace:
    """The boosted prediction and what GSM derived on the way (None where a module was off)."""

    prediction: torch.Tensor  # [B, H, W]
    first_prediction: torch.Tensor  # [B, H, W], the base method's output
    proxy_foreground: torch.Tensor | None = None  # m_pos [B, H, W] bool
    proxy_background: torch.Tensor | None = None  # m_neg [B, H, W] bool
    foreground_weights: torch.Tensor | None = None  # [B, N]
    background_weights: torch.Tensor | None = None  # [B, N]


# Query-specific Semantic Modeling


def qsm_grid(size: tuple[int, int], longest: int) -> tuple[int, int]:
    h, w = size
    scale = min(1.0, longest / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def spatial_kernel(size: tuple[int, int], sigma: float, device: torch.device) -> torch.Tensor:
    """K of Eq. 3 on an h x w grid: [h*w, h*w], sigma in grid cells."""
    rows, cols = torch.meshgrid(torch.arange(size[0], device=device), torch.arange(size[1], device=device),
                                indexing="ij")
    cells = torch.stack([rows.flatten(), cols.flatten()], dim=1).float()
    return torch.exp(-torch.cdist(cells, cells).square() / (2 * sigma**2))


def edge_strength(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Sobel gradient magnitude of the grey images [B, 3, H, W], area-pooled to [B, h, w]."""
    grey = torch.einsum("bchw,c->bhw", images, GREY.to(images))[:, None]
    kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None].to(images)
    gradients = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return F.interpolate(gradients.norm(dim=1, keepdim=True), size, mode="area")[:, 0]


def _grow(labels: torch.Tensor, growing: torch.Tensor | None) -> torch.Tensor:
    """Let labels [B, 1, h, w] spread to 8-neighbours until stable: within `growing` cells, or into
    still-unlabelled (0) cells when `growing` is None."""
    while True:
        allowed = labels == 0 if growing is None else growing
        grown = torch.where(allowed, F.max_pool2d(labels, 3, stride=1, padding=1), labels)
        if torch.equal(grown, labels):
            return labels
        labels = grown


def edge_regions(open_cells: torch.Tensor) -> torch.Tensor:
    """Regions of Eq. 4: [B, h, w] bool (not an edge) -> [B, h*w] region ids 0..l-1 per image."""
    h, w = open_cells.shape[1:]
    ids = torch.arange(1, h * w + 1, device=open_cells.device, dtype=torch.float32).view(1, 1, h, w)
    cells = open_cells[:, None]
    components = _grow(torch.where(cells, ids, 0.0), cells)  # an open component takes its largest id
    labels = _grow(components, None).flatten(1)  # edge cells join the first region to reach them
    return torch.stack([torch.unique(item, return_inverse=True)[1] for item in labels])


def region_affinity(similarity: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """D of Eq. 5, broadcast to pixel pairs: similarity [B, n, n], regions [B, n] -> [B, n, n]."""
    members = F.one_hot(regions, int(regions.max()) + 1).to(similarity)  # [B, n, l]
    totals = members.transpose(1, 2) @ similarity @ members
    sizes = members.sum(dim=1)
    means = totals / (sizes[:, :, None] * sizes[:, None, :]).clamp(min=1)
    n, l = members.shape[1:]
    by_row = torch.gather(means, 1, regions[:, :, None].expand(-1, n, l))
    return torch.gather(by_row, 2, regions[:, None, :].expand(-1, n, n))


def graph_weights(similarity: torch.Tensor, spatial: torch.Tensor, regional: torch.Tensor,
                  semantic: torch.Tensor) -> torch.Tensor:
    """E of Eq. 6 with rows scaled by exp(S+ - S-) [B, n], symmetrized for spectral clustering."""
    edges = similarity * (spatial + regional) * semantic.exp()[:, :, None]
    return (edges + edges.transpose(1, 2)) / 2


def kmeans(points: torch.Tensor, clusters: int, first: torch.Tensor) -> torch.Tensor:
    """points [B, n, d] -> labels [B, n]; seeds: point `first` [B], then farthest points."""
    index = torch.arange(points.shape[0], device=points.device)
    centres = [points[index, first]]
    nearest = (points - centres[0][:, None]).norm(dim=-1)
    for _ in range(1, clusters):
        centres.append(points[index, nearest.argmax(dim=1)])
        nearest = torch.minimum(nearest, (points - centres[-1][:, None]).norm(dim=-1))
    centre = torch.stack(centres, dim=1)
    for _ in range(KMEANS_STEPS):
        members = F.one_hot(torch.cdist(points, centre).argmin(dim=-1), clusters).to(points)
        sizes = members.sum(dim=1)[:, :, None]
        centre = torch.where(sizes > 0, members.transpose(1, 2) @ points / sizes.clamp(min=1), centre)
    return torch.cdist(points, centre).argmin(dim=-1)


def spectral_clustering(weights: torch.Tensor, clusters: int, first: torch.Tensor) -> torch.Tensor:
    """Ng, Jordan and Weiss on [B, n, n] non-negative weights -> labels [B, n]."""
    clusters = min(clusters, weights.shape[-1])
    scale = weights.sum(dim=-1).clamp(min=1e-12).rsqrt()
    normalized = scale[:, :, None] * weights * scale[:, None, :]
    embedding = torch.linalg.eigh(normalized).eigenvectors[..., -clusters:]
    return kmeans(F.normalize(embedding, dim=-1), clusters, first)


def qsm_mask(features: torch.Tensor, images: torch.Tensor, affinity: Affinity,
             options: dict[str, OptionValue]) -> torch.Tensor:
    """m_qsm (Eqs. 2-8) on the QSM grid: query features [B, C, h, w] -> [B, h', w'] bool."""
    size = qsm_grid(tuple(features.shape[-2:]), int(options["qsm_size"]))
    pooled = F.normalize(F.interpolate(features, size, mode="area").flatten(2), dim=1)  # [B, C, n]
    semantic = F.interpolate((affinity.positive - affinity.negative)[:, None], size, mode="area").flatten(1)
    similarity = (pooled.transpose(1, 2) @ pooled).clamp(min=0)
    spatial = spatial_kernel(size, float(options["sigma"]) * max(size), features.device)
    strength = edge_strength(images, size).flatten(1)
    threshold = torch.quantile(strength, float(options["edge_quantile"]), dim=1, keepdim=True)
    regions = edge_regions((strength <= threshold).view(-1, *size))
    most_foreground = semantic.argmax(dim=1)
    fine = spectral_clustering(graph_weights(similarity, spatial, region_affinity(similarity, regions), semantic),
                               int(options["clusters"]), most_foreground)
    binary = spectral_clustering(graph_weights(similarity, spatial, region_affinity(similarity, fine), semantic),
                                 2, most_foreground)
    members = F.one_hot(binary, 2).to(semantic)
    mean_semantic = (members * semantic[:, :, None]).sum(dim=1) / members.sum(dim=1).clamp(min=1)
    return (binary == mean_semantic.argmax(dim=1, keepdim=True)).view(-1, *size)


def proxy_masks(first_prediction: torch.Tensor, qsm: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(m_pos, m_neg) [B, H, W] bool: Eq. 9 with m_qsm [B, h, w], or m_pred and its complement."""
    predicted = first_prediction > 0.5
    if qsm is None:
        return predicted, ~predicted
    upsampled = F.interpolate(qsm[:, None].float(), predicted.shape[-2:], mode="bilinear",
                              align_corners=False)[:, 0] > 0.5
    return upsampled & predicted, ~upsampled & ~predicted


# Representative Re-weighting


def representative_weights(prototypes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eqs. 11-13: prototypes [B, N, C] of the valid [B, N] references -> softmax weights [B, N]."""
    unit = F.normalize(prototypes, dim=-1)
    similarity = unit @ unit.transpose(1, 2)
    n = prototypes.shape[1]
    others = valid[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=valid.device)
    generalization = (similarity * others).sum(dim=-1) / others.sum(dim=-1).clamp(min=1)
    return generalization.masked_fill(~valid, float("-inf")).softmax(dim=1).nan_to_num(0.0)


def uniform_weights(valid: torch.Tensor) -> torch.Tensor:
    return valid / valid.sum(dim=1, keepdim=True).clamp(min=1)


def has_pixels(masks: torch.Tensor) -> torch.Tensor:
    """[B, N, H, W] -> [B, N] bool."""
    return masks.flatten(2).sum(dim=-1) > 0


def reference_weights(references: References, reweight: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background weights [B, N]: RR's, or uniform over the references with pixels."""
    valid = has_pixels(references.foreground), has_pixels(references.background)
    if not reweight:
        return uniform_weights(valid[0]), uniform_weights(valid[1])
    foreground, background = reference_prototypes(references)
    return representative_weights(foreground, valid[0]), representative_weights(background, valid[1])


# The adapters


class GsmAdapter(FssAdapter):
    """GSM around `base_method`: a subclass takes the base's declarations, and its options next to GSM's."""

    base_method: ClassVar[type[AffinityAdapter]]
    qsm_size: ClassVar[int]  # the side of QSM's clustering grid (see the module docstring)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.support_annotations = cls.base_method.support_annotations
        cls.weights = cls.base_method.weights
        cls.option_defaults = {**cls.base_method.option_defaults, **GSM_OPTION_DEFAULTS, "qsm_size": cls.qsm_size}
        cls.option_choices = cls.base_method.option_choices
        cls.backbones = cls.base_method.backbones

    def __init__(self, options: dict[str, OptionValue] | None = None, backbone: str | None = None) -> None:
        super().__init__(options, backbone)
        if self.options["qsm"] and not self.options["tsr"]:
            raise UsageError("GSM's QSM only builds the proxy mask of TSR: with --option tsr=false "
                             "add --option qsm=false")
        base_options = {name: self.options[name] for name in self.base_method.option_defaults}
        self.base = self.base_method(base_options, backbone)

    @property
    def backbone(self) -> str | None:
        return self.base.backbone

    def packaged_weights(self) -> dict[str, Path]:
        return self.base.packaged_weights()

    def setup(self, context: SetupContext) -> None:
        self.base.setup(context)

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        return self.boost(batch).prediction

    def boost(self, batch: EpisodeBatch) -> GsmTrace:
        encoded = self.base.encode(batch)
        first_affinity = self.base.affinity(encoded, encoded.references)
        first = self.base.mask(encoded, first_affinity)
        if not (self.options["tsr"] or self.options["rr"]):
            return GsmTrace(first, first)
        references, proxy = encoded.references, (None, None)
        if self.options["tsr"]:
            qsm = (qsm_mask(encoded.query_features, batch.query_images, first_affinity, self.options)
                   if self.options["qsm"] else None)
            proxy = proxy_masks(first, qsm)
            references = references.joined(encoded.query_features, *proxy)
        weights = reference_weights(references, bool(self.options["rr"]))
        second = self.base.mask(encoded, self.base.affinity(encoded, references, *weights))
        return GsmTrace(second, first, *proxy, *weights)


class GsmProtoNetAdapter(GsmAdapter):
    description = "GSM (TSR, QSM, RR) boosting protonet, training-free"
    base_method = ProtoNetAdapter
    qsm_size = 25  # protonet's 50x50 stride-8 grid (at 400x400) pooled to 25x25


class GsmAffinitySamAdapter(GsmAdapter):
    description = "GSM (TSR, QSM, RR) boosting affinity-sam, training-free"
    base_method = AffinitySamAdapter
    qsm_size = 37  # DINOv2's full 37x37 grid, as the paper
