"""models.imaging: placements (stretch, letterbox), box and mask mapping, fit_image, fit_mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bucketvision.models.imaging import Placement, fit_image, fit_mask

# --- Placement.plan ----------------------------------------------------------------------------


def test_stretch_scales_each_axis_to_the_target() -> None:
    placement = Placement.plan(200, 100, (64, 32), "stretch")
    assert (placement.original_width, placement.original_height) == (200, 100)
    assert (placement.target_width, placement.target_height) == (64, 32)
    assert placement.scale_x == pytest.approx(64 / 200)
    assert placement.scale_y == pytest.approx(32 / 100)
    assert (placement.pad_x, placement.pad_y) == (0, 0)
    assert placement.content_size == (64, 32)


def test_stretch_ignores_the_aspect_ratio() -> None:
    placement = Placement.plan(100, 300, (50, 50), "stretch")
    assert placement.scale_x == pytest.approx(0.5)
    assert placement.scale_y == pytest.approx(50 / 300)
    assert placement.content_size == (50, 50)


def test_letterbox_of_a_wide_image_pads_top_and_bottom() -> None:
    placement = Placement.plan(200, 100, (64, 64), "letterbox")
    assert placement.scale_x == pytest.approx(0.32)
    assert placement.scale_y == pytest.approx(0.32)
    assert placement.content_size == (64, 32)
    assert (placement.pad_x, placement.pad_y) == (0, 16)


def test_letterbox_of_a_tall_image_pads_left_and_right() -> None:
    placement = Placement.plan(100, 200, (64, 64), "letterbox")
    assert placement.scale_x == pytest.approx(0.32)
    assert placement.scale_y == pytest.approx(0.32)
    assert placement.content_size == (32, 64)
    assert (placement.pad_x, placement.pad_y) == (16, 0)


def test_letterbox_of_a_square_image_into_a_wide_target() -> None:
    placement = Placement.plan(100, 100, (128, 64), "letterbox")
    assert placement.content_size == (64, 64)
    assert (placement.pad_x, placement.pad_y) == (32, 0)


def test_letterbox_with_odd_padding_rounds_the_offset_down() -> None:
    placement = Placement.plan(100, 30, (64, 64), "letterbox")
    assert placement.content_size == (64, 19)  # round(30 * 0.64) = 19
    assert (placement.pad_x, placement.pad_y) == (0, 22)  # (64 - 19) // 2


def test_letterbox_keeps_at_least_one_pixel_of_a_sliver() -> None:
    placement = Placement.plan(1000, 1, (64, 64), "letterbox")
    assert placement.content_size == (64, 1)
    assert placement.pad_y == 31


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
@pytest.mark.parametrize("size", [(64, 64), (37, 91), (300, 17)])
def test_a_target_equal_to_the_original_is_the_identity(resize: str, size: tuple[int, int]) -> None:
    width, height = size
    placement = Placement.plan(width, height, size, resize)
    assert placement == Placement.identity(width, height)
    assert placement.content_size == size


@pytest.mark.parametrize(
    ("original", "target"),
    [
        ((200, 100), (64, 64)),
        ((100, 200), (64, 64)),
        ((640, 480), (320, 320)),
        ((481, 640), (256, 192)),
        ((33, 1000), (128, 128)),
        ((17, 13), (256, 256)),  # an upscale
    ],
)
def test_letterbox_content_fills_one_side_and_fits_inside(
    original: tuple[int, int], target: tuple[int, int]
) -> None:
    placement = Placement.plan(*original, target, "letterbox")
    width, height = placement.content_size
    assert width == target[0] or height == target[1]
    assert placement.pad_x >= 0 and placement.pad_x + width <= target[0]
    assert placement.pad_y >= 0 and placement.pad_y + height <= target[1]
    # centred: the two margins differ by at most one pixel
    assert abs((target[0] - width - placement.pad_x) - placement.pad_x) <= 1
    assert abs((target[1] - height - placement.pad_y) - placement.pad_y) <= 1
    # the aspect ratio is kept, up to rounding to whole pixels
    scale = min(target[0] / original[0], target[1] / original[1])
    assert abs(width - original[0] * scale) <= 0.5 + 1e-9
    assert abs(height - original[1] * scale) <= 0.5 + 1e-9


def test_plan_refuses_an_unknown_resize_mode() -> None:
    with pytest.raises(ValueError, match="resize must be one of"):
        Placement.plan(10, 10, (5, 5), "crop")


# --- boxes -------------------------------------------------------------------------------------


def test_boxes_to_target_under_letterbox() -> None:
    placement = Placement.plan(200, 100, (64, 64), "letterbox")
    mapped = placement.boxes_to_target(np.array([[0, 0, 200, 100], [50, 25, 100, 75]]))
    assert mapped.dtype == np.float32
    np.testing.assert_allclose(mapped, [[0, 16, 64, 48], [16, 24, 32, 40]], atol=1e-4)


def test_boxes_to_target_under_stretch() -> None:
    placement = Placement.plan(200, 100, (100, 100), "stretch")
    mapped = placement.boxes_to_target([10, 10, 20, 20])
    np.testing.assert_allclose(mapped, [[5, 10, 10, 20]], atol=1e-4)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
@pytest.mark.parametrize(("original", "target"), [((200, 100), (64, 64)), ((90, 300), (96, 48))])
def test_boxes_round_trip(resize: str, original: tuple[int, int], target: tuple[int, int]) -> None:
    placement = Placement.plan(*original, target, resize)
    width, height = original
    boxes = np.array(
        [
            [0, 0, width, height],
            [1.5, 2.5, width / 2, height / 3],
            [width / 4, height / 4, width - 1, height - 1],
        ],
        dtype=np.float32,
    )
    there = placement.boxes_to_target(boxes)
    assert np.all(there[:, [0, 2]] >= placement.pad_x - 1e-3)
    assert np.all(there[:, [0, 2]] <= target[0] + 1e-3)
    assert np.all(there[:, [1, 3]] >= placement.pad_y - 1e-3)
    assert np.all(there[:, [1, 3]] <= target[1] + 1e-3)
    np.testing.assert_allclose(placement.boxes_to_original(there), boxes, atol=1e-3)


def test_boxes_to_original_clips_to_the_original_image() -> None:
    placement = Placement.plan(200, 100, (64, 64), "letterbox")
    # the whole target, padding included, and a box partly outside it
    boxes = np.array([[0, 0, 64, 64], [-10, 10, 80, 20]], dtype=np.float32)
    back = placement.boxes_to_original(boxes)
    np.testing.assert_allclose(back[0], [0, 0, 200, 100], atol=1e-3)
    assert back[1, 0] == 0.0  # clipped at the left
    assert back[1, 1] == 0.0  # inside the top padding: clipped to the first row
    assert back[1, 2] == pytest.approx(200.0)  # clipped at the right
    assert back[1, 3] == pytest.approx(12.5)  # (20 - 16) / 0.32


def test_boxes_to_original_of_no_boxes() -> None:
    placement = Placement.plan(200, 100, (64, 64), "letterbox")
    assert placement.boxes_to_original(np.zeros((0, 4))).shape == (0, 4)
    assert placement.boxes_to_target([]).shape == (0, 4)


# --- crop_content and mask_to_original ----------------------------------------------------------


def test_crop_content_drops_the_padding() -> None:
    placement = Placement.plan(200, 100, (64, 64), "letterbox")  # pad_y 16, content 64 x 32
    array = np.full((64, 64, 3), 255, np.uint8)
    array[16:48] = 7
    content = placement.crop_content(array)
    assert content.shape == (32, 64, 3)
    assert np.all(content == 7)
    assert placement.crop_content(array[..., 0]).shape == (32, 64)


def test_crop_content_of_a_tall_image() -> None:
    placement = Placement.plan(100, 200, (64, 64), "letterbox")  # pad_x 16, content 32 x 64
    array = np.zeros((64, 64), np.uint8)
    array[:, 16:48] = 3
    content = placement.crop_content(array)
    assert content.shape == (64, 32)
    assert np.all(content == 3)


def test_crop_content_under_stretch_is_everything() -> None:
    placement = Placement.plan(200, 100, (64, 64), "stretch")
    array = np.arange(64 * 64).reshape(64, 64)
    np.testing.assert_array_equal(placement.crop_content(array), array)


@pytest.mark.parametrize(
    ("original", "target", "resize"),
    [
        ((200, 100), (64, 64), "letterbox"),
        ((100, 200), (64, 64), "letterbox"),
        ((77, 45), (128, 128), "letterbox"),
        ((200, 100), (64, 64), "stretch"),
        ((64, 48), (64, 48), "letterbox"),
    ],
)
def test_mask_to_original_has_the_original_size(
    original: tuple[int, int], target: tuple[int, int], resize: str
) -> None:
    placement = Placement.plan(*original, target, resize)
    mask = np.zeros((target[1], target[0]), np.uint8)
    width, height = placement.content_size
    mask[placement.pad_y : placement.pad_y + height, placement.pad_x : placement.pad_x + width] = 2
    back = placement.mask_to_original(mask)
    assert back.shape == (original[1], original[0])
    assert back.dtype == np.uint8
    assert np.all(back == 2)  # no padding leaks into the original


def test_mask_to_original_keeps_class_ids_and_their_sides() -> None:
    placement = Placement.plan(200, 100, (64, 64), "letterbox")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, :32] = 1
    mask[16:48, 32:] = 3
    back = placement.mask_to_original(mask)
    assert back.shape == (100, 200)
    assert set(np.unique(back).tolist()) == {1, 3}  # nearest neighbour: no blended ids
    assert np.all(back[:, :100] == 1)
    assert np.all(back[:, 100:] == 3)


def test_mask_round_trip_with_an_integer_scale_is_exact() -> None:
    rng = np.random.default_rng(0)
    original = rng.integers(0, 4, size=(16, 32), dtype=np.uint8)  # 32 wide, 16 high
    placement = Placement.plan(32, 16, (64, 64), "letterbox")  # scale 2, pad_y 16
    fitted = np.asarray(fit_mask(Image.fromarray(original, "L"), placement))
    assert fitted.shape == (64, 64)
    assert np.all(fitted[:16] == 0) and np.all(fitted[48:] == 0)
    np.testing.assert_array_equal(placement.mask_to_original(fitted), original)


def test_mask_to_original_under_identity() -> None:
    placement = Placement.identity(5, 3)
    mask = np.arange(15, dtype=np.uint8).reshape(3, 5)
    np.testing.assert_array_equal(placement.mask_to_original(mask), mask)


# --- fit_image ---------------------------------------------------------------------------------


def test_fit_image_letterbox_pads_with_the_fill_colour() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    fitted, placement = fit_image(image, (64, 64), "letterbox", fill=114)
    assert fitted.size == (64, 64)
    assert fitted.mode == "RGB"
    assert placement == Placement.plan(200, 100, (64, 64), "letterbox")
    pixels = np.asarray(fitted)
    assert np.all(pixels[:16] == 114)
    assert np.all(pixels[48:] == 114)
    assert np.all(pixels[16:48] == [255, 0, 0])


def test_fit_image_letterbox_of_a_tall_grey_image() -> None:
    image = Image.new("L", (100, 200), 200)
    fitted, placement = fit_image(image, (64, 64), "letterbox")
    assert fitted.mode == "L"
    assert (placement.pad_x, placement.pad_y) == (16, 0)
    pixels = np.asarray(fitted)
    assert np.all(pixels[:, :16] == 0)
    assert np.all(pixels[:, 48:] == 0)
    assert np.all(pixels[:, 16:48] == 200)


def test_fit_image_letterbox_places_the_content_where_the_placement_says() -> None:
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((0, 255, 0), (0, 0, 100, 100))  # left half green, right half black
    fitted, placement = fit_image(image, (64, 64), "letterbox", fill=50)
    content = placement.crop_content(np.asarray(fitted))
    assert content.shape == (32, 64, 3)
    assert np.all(content[:, :30, 1] == 255)
    assert np.all(content[:, 34:] == 0)


def test_fit_image_stretch_fills_the_whole_target() -> None:
    image = Image.new("RGB", (200, 100), (10, 20, 30))
    fitted, placement = fit_image(image, (64, 64), "stretch", fill=255)
    assert fitted.size == (64, 64)
    assert (placement.pad_x, placement.pad_y) == (0, 0)
    assert np.all(np.asarray(fitted) == [10, 20, 30])  # no padding anywhere


def test_fit_image_with_the_same_aspect_needs_no_padding() -> None:
    image = Image.new("RGB", (128, 64), (9, 9, 9))
    fitted, placement = fit_image(image, (64, 32), "letterbox", fill=255)
    assert fitted.size == (64, 32)
    assert (placement.pad_x, placement.pad_y) == (0, 0)
    assert np.all(np.asarray(fitted) == 9)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_fit_image_at_the_target_size_leaves_the_pixels_alone(resize: str) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    fitted, placement = fit_image(image, (64, 48), resize)
    assert placement == Placement.identity(64, 48)
    np.testing.assert_array_equal(np.asarray(fitted), pixels)


# --- fit_mask ----------------------------------------------------------------------------------


def test_fit_mask_pads_with_background_and_keeps_ids() -> None:
    mask = np.zeros((100, 200), np.uint8)
    mask[:, :100] = 1
    mask[:, 100:] = 3
    placement = Placement.plan(200, 100, (64, 64), "letterbox")
    fitted = fit_mask(Image.fromarray(mask, "L"), placement)
    assert fitted.mode == "L"
    assert fitted.size == (64, 64)
    pixels = np.asarray(fitted)
    assert np.all(pixels[:16] == 0)
    assert np.all(pixels[48:] == 0)
    assert np.all(pixels[16:48, :32] == 1)
    assert np.all(pixels[16:48, 32:] == 3)
    assert set(np.unique(pixels).tolist()) == {0, 1, 3}


def test_fit_mask_follows_its_image() -> None:
    image = Image.new("RGB", (90, 150), (255, 255, 255))
    mask = Image.new("L", (90, 150), 2)
    fitted_image, placement = fit_image(image, (96, 96), "letterbox", fill=0)
    fitted_mask = np.asarray(fit_mask(mask, placement))
    image_content = np.asarray(fitted_image)[..., 0] > 127
    np.testing.assert_array_equal(fitted_mask == 2, image_content)


def test_fit_mask_under_stretch_covers_everything() -> None:
    placement = Placement.plan(30, 10, (20, 20), "stretch")
    fitted = np.asarray(fit_mask(Image.new("L", (30, 10), 5), placement))
    assert fitted.shape == (20, 20)
    assert np.all(fitted == 5)


def test_center_crop_covers_the_target_and_cuts_the_overflow_evenly() -> None:
    pixels = np.zeros((200, 300, 3), np.uint8)
    pixels[:, :25] = 255  # a band on the left edge: cut off
    pixels[:, 140:160] = 128  # a band in the middle: kept, centred
    fitted, placement = fit_image(Image.fromarray(pixels), (96, 96), "center-crop")
    assert fitted.size == (96, 96)
    assert placement.scale_x == placement.scale_y == pytest.approx(96 / 200)
    assert placement.content_size == (144, 96) and (placement.pad_x, placement.pad_y) == (-24, 0)
    out = np.asarray(fitted)
    assert out[:, :5].max() < 30  # the left band is gone
    assert 100 < out[48, 46:50, 0].mean() < 140  # the middle band sits in the middle
    # a point of the original maps through the placement like any other
    box = placement.boxes_to_target(np.array([[150, 100, 150, 100]], np.float32))[0]
    assert box[:2] == pytest.approx([48, 48])


def test_center_crop_of_a_tall_image_into_a_wide_target() -> None:
    fitted, placement = fit_image(Image.new("L", (100, 400)), (120, 60), "center-crop")
    assert fitted.size == (120, 60)
    assert placement.content_size == (120, 480) and placement.pad_y == -210
