"""Camera driver formats (issue 16 item 3): grey to RGB, CompressedImage (JPEG/PNG), rectification maps."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from latentstack import msgs


def _compressed(img: np.ndarray, codec: str, fmt: str | None = None, **save):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=codec, **save)
    return msgs.new("sensor_msgs/msg/CompressedImage", header=msgs.header(3, "cam"),
                    format=fmt if fmt is not None else codec.lower(),
                    data=np.frombuffer(buf.getvalue(), np.uint8))


def test_grey_images_become_three_equal_rgb_channels():
    g8 = np.random.default_rng(0).integers(0, 256, (5, 7), dtype=np.uint8)
    for enc in ("mono8", "8UC1"):
        out = msgs.msg_to_image(msgs.image_to_msg(g8, enc), want="rgb8")
        assert out.shape == (5, 7, 3) and out.dtype == np.uint8
        assert all(np.array_equal(out[..., c], g8) for c in range(3))
    g16 = np.array([[0, 128, 129, 257], [32767, 65406, 65407, 65535]], np.uint16)
    out = msgs.msg_to_image(msgs.image_to_msg(g16, "mono16"), want="rgb8")
    # v * 255/65535 = v/257, rounded; these values are >= 0.002 from a .5 tie (no float-rounding ambiguity)
    np.testing.assert_array_equal(out[..., 0], [[0, 0, 1, 1], [127, 254, 255, 255]])
    be = msgs.new("sensor_msgs/msg/Image", height=1, width=2, encoding="mono16", is_bigendian=1, step=4,
                  data=np.array([0xFF, 0xFF, 0x01, 0x01], np.uint8))
    np.testing.assert_array_equal(msgs.msg_to_image(be, want="rgb8")[0, :, 1], [255, 1])
    with pytest.raises(msgs.MessageValueError):
        msgs.msg_to_image(msgs.image_to_msg(np.zeros((2, 2), np.float32)), want="rgb8")


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "rgb8; png compressed rgb8"])
def test_png_decodes_exactly(fmt):
    img = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(msgs.compressed_image_to_numpy(_compressed(img, "PNG", fmt)), img)


def test_jpeg_mono_and_sixteen_bit_png():
    # a smooth image: JPEG at quality 95 stays within a few grey levels
    yy, xx = np.mgrid[0:32, 0:48]
    img = np.stack([xx * 5, yy * 7, (xx + yy) * 3], -1).astype(np.uint8)
    out = msgs.compressed_image_to_numpy(_compressed(img, "JPEG", "bgr8; jpeg compressed bgr8", quality=95))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() < 3
    grey = (xx * 5).astype(np.uint8)
    out = msgs.compressed_image_to_numpy(_compressed(grey, "PNG", "mono8; png compressed mono8"))
    assert all(np.array_equal(out[..., c], grey) for c in range(3))
    g16 = (xx * 1000).astype(np.uint16)
    out = msgs.compressed_image_to_numpy(_compressed(g16, "PNG", "mono16; png compressed mono16"))
    np.testing.assert_array_equal(out[..., 2], msgs.msg_to_image(msgs.image_to_msg(g16), want="rgb8")[..., 2])


def test_bad_compressed_images_raise_message_value_error():
    img = np.zeros((40, 60, 3), np.uint8)
    good = _compressed(img, "PNG")
    cases = {
        "not an image": msgs.new("sensor_msgs/msg/CompressedImage", format="jpeg", data=np.arange(50, dtype=np.uint8)),
        "empty": msgs.new("sensor_msgs/msg/CompressedImage", format="png"),
        "truncated png": msgs.new("sensor_msgs/msg/CompressedImage", format="png", data=good.data[:60]),
        "compressedDepth": msgs.new("sensor_msgs/msg/CompressedImage", format="16UC1; compressedDepth png",
                                    data=good.data),
    }
    for name, m in cases.items():
        with pytest.raises(msgs.MessageValueError):
            msgs.compressed_image_to_numpy(m)
        assert name
    seen = []

    def too_big(w: int, h: int) -> None:
        seen.append((w, h))
        raise msgs.MessageValueError("too big")

    with pytest.raises(msgs.MessageValueError, match="too big"):
        msgs.compressed_image_to_numpy(good, check_size=too_big)
    assert seen == [(60, 40)]


def test_decompression_bomb_is_stopped_by_the_size_check_before_decoding():
    # a 4096 x 4096 black PNG is ~50 kB on the wire and 50 MB decoded: refused from the header
    bomb = _compressed(np.zeros((4096, 4096), np.uint8), "PNG")
    assert bomb.data.size < 200_000

    def cap(w: int, h: int) -> None:
        if w * h > 1024 * 1024:
            raise msgs.MessageValueError(f"{w}x{h} over the cap")

    with pytest.raises(msgs.MessageValueError, match="4096x4096 over the cap"):
        msgs.compressed_image_to_numpy(bomb, check_size=cap)


def _info(model: str, d, w: int = 64, h: int = 48):
    info = msgs.camera_info(w, h, 50.0, 50.0, 31.5, 23.5)
    info.distortion_model = model
    info.d = np.asarray(d, np.float64)
    return info


@pytest.mark.parametrize("model,d", [("plumb_bob", [-0.2, 0.05, 0.001, -0.001, 0.0]),
                                     ("rational_polynomial", [-0.2, 0.05, 0.001, -0.001, 0.0, 0.01, 0.0, 0.0]),
                                     ("equidistant", [0.05, -0.01, 0.0, 0.0])])
def test_rectification_maps_invert_the_distortion(model, d):
    info = _info(model, d)
    mx, my = msgs.rectification_maps(info)
    assert mx.shape == (48, 64) and my.shape == (48, 64) and mx.dtype == np.float32
    # map(u, v) = where the rectified pixel (u, v) lies in the raw image: project the undistorted ray through the
    # distortion model with OpenCV's own projectPoints and compare
    k = np.asarray(info.k).reshape(3, 3)
    u, v = np.meshgrid(np.arange(4, 60, 7.0), np.arange(4, 44, 7.0))
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1).reshape(-1, 1, 3)
    dd = np.asarray(d, np.float64)
    if model == "equidistant":
        proj, _ = cv2.fisheye.projectPoints(rays, np.zeros((3, 1)), np.zeros((3, 1)), k, dd)
    else:
        proj, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), k, dd)
    proj = proj.reshape(u.shape + (2,))
    iu, iv = u.astype(int), v.astype(int)
    np.testing.assert_allclose(mx[iv, iu], proj[..., 0], atol=1e-2)
    np.testing.assert_allclose(my[iv, iu], proj[..., 1], atol=1e-2)
    assert np.abs(mx[iv, iu] - u).max() > 0.1  # the distortion moved pixels: the check above is not vacuous


def test_identity_calibration_gives_identity_maps_and_bad_ones_are_refused():
    mx, my = msgs.rectification_maps(_info("plumb_bob", np.zeros(5)))
    v, u = np.mgrid[0:48, 0:64]
    np.testing.assert_allclose(mx, u, atol=1e-3)
    np.testing.assert_allclose(my, v, atol=1e-3)
    bad = {
        "unknown model": _info("kannala_brandt_9", np.zeros(9)),
        "wrong D length": _info("rational_polynomial", np.zeros(5)),
        "non-finite": _info("plumb_bob", [np.nan, 0, 0, 0, 0]),
    }
    zero_f = _info("plumb_bob", np.zeros(5))
    zero_f.p[0] = 0.0
    bad["zero focal"] = zero_f
    binned = _info("plumb_bob", np.zeros(5))
    binned.binning_x = 2
    bad["binning"] = binned
    for name, info in bad.items():
        with pytest.raises(msgs.MessageValueError):
            msgs.rectification_maps(info)
        assert name
