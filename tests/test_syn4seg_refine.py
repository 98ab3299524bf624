"""Syn4Seg's pseudo-label refinement on hand-built masks and features with known answers: APF frees a
spurious region, APR relabels free pixels to the nearest adaptive prototype, SABR updates only its
band and free pixels; SABR also runs with a tiny random SAM."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fssbench.adapters.syn4seg.refine import (FREE, adaptive_prototypes, apf, apr, boundary, sabr,
                                             support_prototypes, tight_box, upsample)


def features_of(vectors: dict[int, list[float]], layout: np.ndarray) -> torch.Tensor:
    """[C, H, W] features: each pixel gets the vector of its layout code."""
    table = torch.zeros(max(vectors) + 1, len(next(iter(vectors.values()))))
    for code, vector in vectors.items():
        table[code] = torch.tensor(vector)
    return table[torch.from_numpy(layout)].permute(2, 0, 1).contiguous()


def test_support_prototypes_pool_every_support_pixel_of_the_class_and_normalize():
    features = torch.zeros(2, 2, 2, 2)
    features[0, :, 0, 0] = torch.tensor([3.0, 0.0])
    features[1, :, 1, 1] = torch.tensor([0.0, 1.0])
    labels = torch.zeros(2, 2, 2, dtype=torch.long)
    labels[0, 0, 0] = labels[1, 1, 1] = 3
    prototype = support_prototypes(features, labels, [3])[3]
    torch.testing.assert_close(prototype, F.normalize(torch.tensor([1.5, 0.5]), dim=0))
    with pytest.raises(ValueError, match="class 4"):
        support_prototypes(features, labels, [4])


def test_apf_frees_the_spurious_region_and_keeps_the_consistent_one():
    mask = np.zeros((8, 12), dtype=np.int64)
    mask[1:4, 1:4] = 2  # region A of novel class 2: features like the prototype
    mask[5:7, 8:11] = 2  # region B of class 2: features unlike it
    mask[5:7, 1:3] = 1  # a base class (no prototype): never touched
    layout = np.zeros_like(mask)
    layout[1:4, 1:4] = 1
    layout[5:7, 8:11] = 2
    features = features_of({0: [0.0, 0.0, 1.0], 1: [1.0, 0.1, 0.0], 2: [0.2, 1.0, 0.0]}, layout)
    result = apf(mask, features, {2: torch.tensor([1.0, 0.0, 0.0])}, threshold=0.6)
    expected = mask.copy()
    expected[5:7, 8:11] = FREE
    np.testing.assert_array_equal(result.numpy(), expected)


def test_apf_keeps_a_region_only_above_the_threshold_and_regions_are_eight_connected():
    mask = np.zeros((4, 4), dtype=np.int64)
    mask[0, 0] = mask[1, 1] = 5  # diagonal neighbours: one region
    cosine = 0.6
    vector = [cosine, (1 - cosine ** 2) ** 0.5]
    features = features_of({0: [0.0, 0.0], 1: vector}, (mask == 5).astype(np.int64))
    prototype = {5: torch.tensor([1.0, 0.0])}
    assert (apf(mask, features, prototype, threshold=0.59) == mask).all()
    freed = apf(mask, features, prototype, threshold=0.61)
    assert freed[0, 0] == freed[1, 1] == FREE and (freed[mask == 0] == 0).all()


def test_adaptive_prototypes_blend_global_and_local_by_hand():
    mask = np.array([[2, 2, 1, FREE]])
    features = torch.tensor([[[1.0, 0.0, 0.0, 0.3]], [[0.0, 1.0, 0.0, 0.3]], [[0.0, 0.0, 1.0, 0.3]]])
    global_prototype = torch.tensor([0.0, 0.0, 2.0])  # normalized to (0, 0, 1)
    prototypes = adaptive_prototypes(mask, features, {2: global_prototype, 3: torch.tensor([1.0, 0.0, 0.0])},
                                     beta=0.7, local_classes=[1, 4])
    local = torch.tensor([0.5, 0.5, 0.0])
    torch.testing.assert_close(prototypes[2], F.normalize(0.7 * torch.tensor([0.0, 0.0, 1.0]) + 0.3 * local, dim=0))
    torch.testing.assert_close(prototypes[3], torch.tensor([1.0, 0.0, 0.0]))  # absent from the image: global only
    torch.testing.assert_close(prototypes[1], torch.tensor([0.0, 0.0, 1.0]))  # base: local only
    assert 4 not in prototypes  # a local-only class absent from the image is no candidate


def test_apr_relabels_free_pixels_to_the_nearest_prototype_above_the_threshold():
    mask = np.array([[3, 3, 1, 1, FREE, FREE, FREE, 0]])
    features = features_of({0: [0.0, 0.0, 1.0], 1: [1.0, 0.0, 0.0], 2: [0.0, 1.0, 0.0],
                            3: [0.9, 0.2, 0.0], 4: [0.1, 0.95, 0.0], 5: [0.5, 0.5, 0.7]},
                           np.array([[1, 1, 2, 2, 3, 4, 5, 0]]))
    result = apr(mask, features, {3: torch.tensor([1.0, 0.0, 0.0])}, beta=0.7, threshold=0.6, local_classes=[1])
    np.testing.assert_array_equal(result.numpy(), [[3, 3, 1, 1, 3, 1, FREE, 0]])


def test_apr_leaves_a_mask_without_free_pixels_alone():
    mask = np.array([[0, 2]])
    assert (apr(mask, torch.ones(2, 1, 2), {2: torch.tensor([1.0, 0.0])}) == torch.from_numpy(mask)).all()


def square_mask() -> np.ndarray:
    mask = np.zeros((40, 40), dtype=np.int64)
    mask[10:30, 10:30] = 1
    mask[2:4, 30:38] = FREE
    return mask


def test_boundary_and_tight_box():
    region = square_mask() == 1
    edge = boundary(region)
    assert edge.sum() == 4 * 19 and not edge[11:29, 11:29].any()
    np.testing.assert_array_equal(tight_box(edge), [10, 10, 29, 29])
    assert not boundary(np.ones((5, 5), dtype=bool)).any()  # the image border is no other label


def test_sabr_updates_only_the_boundary_band_and_free_pixels():
    mask = square_mask()
    boxes = []

    def everything(image, box):  # a segmenter that claims the whole image
        boxes.append(box)
        return np.ones(image.shape[:2], dtype=bool)

    image = np.zeros((40, 40, 3), dtype=np.uint8)
    result = sabr(image, mask, everything, delta=5).numpy()
    np.testing.assert_array_equal(boxes[0], [10, 10, 29, 29])
    edge = boundary(mask == 1)
    rows, cols = np.mgrid[0:40, 0:40]
    distance = np.min(np.hypot(rows[..., None] - np.nonzero(edge)[0], cols[..., None] - np.nonzero(edge)[1]), axis=-1)
    band = distance < 5
    changed = result != mask
    assert changed.any() and not (changed & ~(band | (mask == FREE))).any()
    assert (result[band | (mask == FREE)] == 1).all()
    assert (result[~band & (mask != FREE)] == mask[~band & (mask != FREE)]).all()


def test_sabr_frees_band_pixels_the_segmenter_rejects_and_larger_classes_go_first():
    mask = np.zeros((30, 30), dtype=np.int64)
    mask[5:25, 3:13] = 1  # area 200
    mask[5:20, 13:23] = 2  # area 150, touching class 1
    calls = []

    def segmenter(image, box):
        calls.append(tuple(box))
        foreground = np.zeros(image.shape[:2], dtype=bool)
        foreground[box[1]:box[3] + 1, box[0]:box[2] + 1] = True  # the box itself
        return foreground

    result = sabr(np.zeros((30, 30, 3), dtype=np.uint8), mask, segmenter, delta=3).numpy()
    assert calls == [(3, 5, 12, 24), (13, 5, 22, 19)]  # class 1 (larger) first
    assert (result[5:25, 3:13] == 1).all()  # class 1 took its box; class 2 could not overwrite it
    assert (result[5:20, 13:23] == 2).all()
    outside = np.ones_like(mask, dtype=bool)
    outside[5:25, 3:23] = False
    near = outside & (ndimage_distance(mask != 0) < 3)
    assert (result[near] == FREE).all() and (result[outside & ~near] == 0).all()


def ndimage_distance(region: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.distance_transform_edt(~region)


def test_upsample_keeps_channels():
    assert upsample(torch.rand(4, 5, 5), (40, 40)).shape == (4, 40, 40)


def test_sabr_runs_with_a_tiny_random_sam():
    from fssbench.adapters.syn4seg.sam import tiny_sam_segmenter

    segmenter = tiny_sam_segmenter(seed=0)
    image = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
    foreground = segmenter(image, np.array([5, 6, 30, 40]))
    assert foreground.shape == (48, 40) and foreground.dtype == bool
    mask = np.zeros((48, 40), dtype=np.int64)
    mask[10:30, 8:25] = 3
    result = sabr(image, mask, segmenter).numpy()
    assert set(np.unique(result)) <= {0, 3, FREE}
    assert (result[20, 16] == 3) and (result[45, 2] == 0)  # deep interior and far background untouched
