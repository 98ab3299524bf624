"""Known-answer tests of the HSNet metric, worked out by hand."""

import numpy as np
import pytest
import torch

from fssbench.harness.metrics import EpisodeScore, FssMetricState, episode_counts, vote_merge


def masks(*rows: str) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in rows])


def test_counts_of_one_episode_by_hand():
    prediction = masks("1100", "1100")
    truth = masks("1000", "1010")
    # fg: I = 2 (0,0),(1,0); U = 5 (0,0),(0,1),(1,0),(1,1),(1,2). bg: I = 3; U = 6
    assert episode_counts(prediction, truth, None) == ((3, 2), (6, 5))


def test_ignored_pixels_leave_both_prediction_and_truth():
    prediction = masks("1100", "1100")
    truth = masks("1000", "1010")
    ignore = masks("0100", "0010")  # removes a false positive and a false negative
    # remaining 6 pixels: fg I = 2, U = 3 ((0,0),(1,0),(1,1)); bg I = 3, U = 4
    assert episode_counts(prediction, truth, ignore) == ((3, 2), (4, 3))


def test_empty_foreground_counts_zero_and_a_class_never_seen_scores_zero():
    empty = masks("000", "000")
    assert episode_counts(empty, empty, None) == ((6, 0), (6, 0))
    state = FssMetricState((3, 4))
    state.update(EpisodeScore(0, 3, (6, 0), (6, 0)))
    state.update(EpisodeScore(1, 4, (5, 1), (5, 1)))
    assert state.per_class_iou() == {3: 0.0, 4: 100.0}  # 0 / max(0, 1) for class 3
    assert state.miou() == 50.0


def test_class_accumulated_iou_is_not_the_mean_of_episode_ious():
    state = FssMetricState((7,))
    state.update(EpisodeScore(0, 7, (10, 1), (11, 2)))  # episode IoU 0.5
    state.update(EpisodeScore(1, 7, (50, 90), (60, 100)))  # episode IoU 0.9
    assert state.miou() == pytest.approx(91 / 102 * 100)
    assert np.mean([r.iou for r in state.records]) * 100 == pytest.approx(70.0)


def test_fbiou_sums_over_classes_before_dividing():
    state = FssMetricState((0, 1))
    state.update(EpisodeScore(0, 0, (8, 2), (10, 4)))
    state.update(EpisodeScore(1, 1, (4, 6), (5, 6)))
    # bg: 12 / 15, fg: 8 / 10 -> mean 0.8
    assert state.fbiou() == pytest.approx(80.0)
    assert state.miou() == pytest.approx((2 / 4 + 6 / 6) / 2 * 100)


def test_merge_equals_one_uninterrupted_state_bit_for_bit():
    rng = np.random.default_rng(0)
    scores = [EpisodeScore(i, int(rng.integers(0, 3)), tuple(rng.integers(0, 1000, 2).tolist()),
                           tuple(rng.integers(1000, 2000, 2).tolist())) for i in range(50)]
    whole = FssMetricState.from_records((0, 1, 2), scores)
    merged = FssMetricState.from_records((0, 1, 2), scores[30:]).merge(FssMetricState.from_records((0, 1, 2), scores[:30]))
    assert merged.miou() == whole.miou() and merged.fbiou() == whole.fbiou()
    assert merged.records == whole.records


def test_update_rejects_a_class_outside_the_fold():
    with pytest.raises(ValueError, match="class 9"):
        FssMetricState((0, 1)).update(EpisodeScore(0, 9, (1, 1), (1, 1)))


def test_vote_merge_divides_by_the_maximum_vote_and_thresholds_at_half():
    votes = torch.stack([masks("1100"), masks("1000"), masks("1010"), masks("1000")]).float()
    # sums 4,1,1,0 -> /4 -> 1, .25, .25, 0
    assert vote_merge(votes).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    # a maximum vote of 2 out of 5: pixels with >= 1 vote pass
    two = torch.stack([masks("110"), masks("100"), masks("000"), masks("000"), masks("000")]).float()
    assert vote_merge(two).tolist() == [[1.0, 1.0, 0.0]]
    assert vote_merge(torch.zeros(3, 1, 2)).tolist() == [[0.0, 0.0]]


def test_original_size_upsampling_of_a_padded_canvas_keeps_its_top_left_like_pfenet():
    from fssbench.harness.fss import upsample_prediction

    canvas = torch.zeros(9, 9)
    canvas[:5, :] = 1  # a landscape image fills the top rows of the canvas; the rest is padding
    mask = upsample_prediction(canvas, (40, 80), padded=True)  # stretched to 80x80, top-left 40x80 kept
    assert mask.shape == (40, 80) and mask.all()
    squashed = upsample_prediction(canvas, (40, 80))  # HSNet: the whole canvas stretched to 40x80
    assert not squashed[-1].any()
    square = torch.rand(9, 9)
    torch.testing.assert_close(upsample_prediction(square, (30, 30), padded=True), upsample_prediction(square, (30, 30)), rtol=0, atol=0)


def test_per_shot_predictions_are_voted_at_the_original_size_as_hsnet_does():
    """3 shots agree on one pixel, one shot also covers a region. Voting at 8x8 keeps only the pixel
    (3 votes against 1), which vanishes when upsampled to 9x9: 0 foreground. HSNet upsamples each shot
    first: the lone pixel vanishes in every shot, so the region holds the maximum vote and stays."""
    from fssbench.harness.episodes import Episode
    from fssbench.harness.fss import score_episode
    from fssbench.harness.loading import LoadedEpisode

    shots = torch.zeros(3, 8, 8)
    shots[:, 3, 4] = 1
    shots[2, 6:, :] = 1
    truth = torch.zeros(9, 9, dtype=torch.bool)
    truth[6:, :] = True
    loaded = LoadedEpisode(query_image=None, query_mask=None, query_ignore=None, scored_mask=truth, scored_ignore=None,
                           support_images=None, support_masks=None, support_labelled=None)
    score = score_episode(Episode(0, 0, 0, "q", ("a", "b", "c")), loaded, shots > 0.5, shots, torch.device("cpu"), False)

    # by hand, HSNet's predict_mask_nshot with use_original_imgsize: upsample, threshold, sum, / max vote, >= 0.5
    upsampled = torch.nn.functional.interpolate(shots[:, None], (9, 9), mode="bilinear", align_corners=True)[:, 0]
    votes = (upsampled > 0.5).long().sum(dim=0)
    expected = votes.float() / max(int(votes.max()), 1) >= 0.5
    assert int(expected.sum()) == 18 and not expected[:6].any()  # two upsampled rows of the region, no lone pixel
    assert score.inter == (int((~expected & ~truth).sum()), int((expected & truth).sum()))
    assert score.union == (int((~expected | ~truth).sum()), int((expected | truth).sum()))
    voted_first = torch.nn.functional.interpolate(vote_merge(shots > 0.5)[None, None], (9, 9), mode="bilinear",
                                                  align_corners=True)[0, 0] > 0.5
    assert not voted_first.any()  # what voting at the evaluation size then upsampling gave: no foreground


@pytest.mark.parametrize("with_ignore", [False, True])
def test_counts_equal_the_definition_on_random_masks_and_views_as_python_ints(with_ignore):
    generator = torch.Generator().manual_seed(3)
    prediction, truth, ignore = (torch.rand(3, 37, 41, generator=generator) > level for level in (0.5, 0.6, 0.9))
    prediction, truth, ignore = prediction[1, :, 3:].t(), truth[1, :, 3:].t(), ignore[1, :, 3:].t()  # strided views
    valid = ~ignore if with_ignore else torch.ones_like(truth)
    expected = ((int((~prediction & ~truth & valid).sum()), int((prediction & truth & valid).sum())),
                (int(((~prediction | ~truth) & valid).sum()), int(((prediction | truth) & valid).sum())))
    counts = episode_counts(prediction, truth, ignore if with_ignore else None)
    assert counts == expected and all(type(value) is int for pair in counts for value in pair)
