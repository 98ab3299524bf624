"""`precomputed` reads prediction PNGs as PIL writes them: palette masks by index, grey masks (0/1 or
0/255) and grey probabilities; anything else is refused, naming the file and the episode."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from fssbench.adapters.precomputed import PrecomputedAdapter
from fssbench.harness.contract import EpisodeBatch, SetupContext
from fssbench.harness.episodes import Episode
from fssbench.harness.errors import PredictionError

SIZE = 8
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 252  # 0 background, 1 aeroplane red
MASK = np.zeros((SIZE, SIZE), np.uint8)
MASK[2:6, 1:5] = 1


def predict(folder, index: int = 7) -> torch.Tensor:
    adapter = PrecomputedAdapter()
    adapter.setup(SetupContext(device=torch.device("cpu"), weights={"predictions": folder}, random_init=False,
                               shot=1, resolution=SIZE, seed=0, class_names=["a"]))
    empty = torch.zeros(1, 1, SIZE, SIZE)
    batch = EpisodeBatch(episodes=[Episode(index, 0, 0, "q", ("s",))], query_images=torch.zeros(1, 3, SIZE, SIZE),
                         support_images=torch.zeros(1, 1, 3, SIZE, SIZE), support_masks=empty,
                         support_labelled=empty, support_annotation="mask", class_names=["a"])
    return adapter.predict(batch)[0]


def save(folder, image: Image.Image, name: str = "0007.png") -> None:
    (folder / "fold0").mkdir(parents=True, exist_ok=True)
    image.save(folder / "fold0" / name)


def palette_image(indices: np.ndarray) -> Image.Image:
    image = Image.fromarray(indices)
    image.putpalette(VOC_PALETTE)  # an 'L' image becomes 'P', its values kept as indices
    return image


@pytest.mark.parametrize("image", [
    pytest.param(palette_image(MASK), id="palette VOC colours"),
    pytest.param(Image.fromarray(MASK * 255), id="grey 0/255"),
    pytest.param(Image.fromarray(MASK), id="grey 0/1"),
    pytest.param(Image.fromarray(MASK.astype(bool)), id="1-bit"),
])
def test_masks_are_read_as_foreground_where_they_are_one(tmp_path, image):
    save(tmp_path, image)
    assert Image.open(tmp_path / "fold0" / "0007.png").mode == image.mode
    torch.testing.assert_close(predict(tmp_path), torch.from_numpy(MASK).float(), rtol=0, atol=0)


def test_a_grey_probability_map_is_read_as_value_over_255(tmp_path):
    probability = np.arange(SIZE * SIZE, dtype=np.uint8).reshape(SIZE, SIZE) * 4
    save(tmp_path, Image.fromarray(probability))
    torch.testing.assert_close(predict(tmp_path), torch.from_numpy(probability / 255).float(), rtol=0, atol=0)


@pytest.mark.parametrize("image, reason", [
    pytest.param(Image.fromarray(np.stack([MASK * 255] * 3, axis=-1)), "has PIL mode 'RGB'", id="RGB"),
    pytest.param(palette_image(MASK * 2), "is a palette PNG with indices 0, 2", id="palette index 2"),
    pytest.param(palette_image(np.where(MASK, 255, 0).astype(np.uint8)), "is a palette PNG with indices 0, 255",
                 id="palette index 255"),
    pytest.param(Image.fromarray(MASK.astype(np.uint16) * 65535), "has PIL mode 'I;16'", id="16-bit grey"),
])
def test_other_pngs_are_refused_naming_the_file_and_the_episode(tmp_path, image, reason):
    save(tmp_path, image)
    with pytest.raises(PredictionError, match=re.escape(f"episode 7: {tmp_path / 'fold0' / '0007.png'} {reason}")):
        predict(tmp_path)
