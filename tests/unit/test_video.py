"""Video files: GIF and MP4 through imageio decode to the frames written; gymnax's renderers
draw headless."""

import imageio.v3 as iio
import jax
import numpy as np
import pytest

from ppox.config import ConfigError
from ppox.host.video import _gymnax_frames, record_video, write_video


def frames(n: int = 6, h: int = 30, w: int = 40) -> list[np.ndarray]:
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, : (i + 1) * w // n] = (200, (30 * i) % 256, 10)
        out.append(f)
    return out


def test_gif_decodes_to_the_frames_written(tmp_path):
    path = write_video(tmp_path / "v.gif", frames(), fps=10)
    back = iio.imread(path, index=None)
    assert back.shape[0] == 6 and back.shape[1:3] == (30, 40)
    np.testing.assert_allclose(back[..., :3].astype(float), np.stack(frames()), atol=8)


def test_mp4_decodes(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    path = write_video(tmp_path / "v.mp4", frames(8), fps=10)
    back = iio.imread(path, plugin="FFMPEG", index=None)
    assert back.shape[0] == 8 and back.shape[1:3] == (32, 48)  # padded to codec blocks
    assert back.std() > 0


def test_gymnax_renderers_draw_headless():
    import gymnax

    for name in ("Breakout-MinAtar", "CartPole-v1"):
        if name == "CartPole-v1":
            pytest.importorskip("pygame")
        env, params = gymnax.make(name)
        _, state = env.reset(jax.random.PRNGKey(0), params)
        states = [state]
        for i in range(3):
            _, state, *_ = env.step(jax.random.PRNGKey(i), state, 1, params)
            states.append(state)
        out, renderer = _gymnax_frames(env, params, states)
        assert len(out) == 4 and out[0].ndim == 3 and out[0].dtype == np.uint8, name
        assert not np.array_equal(out[0], out[-1]), name
        assert "gymnax" in renderer


def test_bad_suffix_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"must end in \.gif or \.mp4"):
        record_video(tmp_path, tmp_path / "v.avi")
