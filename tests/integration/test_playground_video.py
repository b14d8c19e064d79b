"""`ppox eval RUN_DIR --video` on a MuJoCo Playground run: MuJoCo's offscreen renderer draws
every step of the episode into an MP4 and a GIF; without offscreen GL, brax's HTML viewer and
one line saying why."""

import base64
import json
import os
import re
import subprocess
import sys
import tomllib
import zlib

import imageio.v3 as iio
import numpy as np
import pytest

from ppox.cli import main

pytest.importorskip("mujoco_playground")
# one tiny training run (~40 s to compile MJX on a 2-core CPU) shared by both tests
pytestmark = pytest.mark.slow

EPISODE = 30  # env steps per episode (episode_length), so one episode is 30 frames


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """CartpoleBalance trained for 256 env steps with 30-step episodes."""
    run = tmp_path_factory.mktemp("pg") / "cb"
    assert main(["train", "--env", "playground/CartpoleBalance", "--run-dir", str(run),
                 "--quiet", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "1",
                 "--update-epochs", "1", "--total-timesteps", "256",
                 "--actor-hidden", "8", "--critic-hidden", "8",
                 "--env-config", f"episode_length={EPISODE}"]) == 0
    return run


def _offscreen_gl() -> str | None:
    """The first of EGL and OSMesa with which ``mujoco.Renderer`` draws here, or None."""
    probe = ("import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco/>'); "
             "r = mujoco.Renderer(m, 8, 8); r.render(); r.close()")
    for gl in ("egl", "osmesa"):
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                              env={**os.environ, "MUJOCO_GL": gl}, timeout=120)
        if done.returncode == 0:
            return gl
    return None


def test_eval_video_draws_every_step_offscreen(tiny_run, tmp_path):
    gl = _offscreen_gl()
    if gl is None:
        pytest.skip("neither MUJOCO_GL=egl nor osmesa can create an offscreen GL context "
                    "here (apt-get install libegl1 libgl1, or libosmesa6)")
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    if gl != "egl":
        env["MUJOCO_GL"] = gl  # ppox defaults to EGL; say OSMesa where only that works
    mp4 = tmp_path / "episode.mp4"
    # a fresh process: MUJOCO_GL is read once, when mujoco is first imported
    done = subprocess.run([sys.executable, "-m", "ppox.cli", "eval", str(tiny_run), "--video",
                           str(mp4), "--episodes", "1", "--no-html"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"wrote {mp4} ({EPISODE} frames, MuJoCo's offscreen renderer (MUJOCO_GL={gl})" \
        in done.stdout, done.stdout
    assert "video:" not in done.stdout  # no fallback note
    frames = iio.imread(mp4, plugin="FFMPEG", index=None)
    assert frames.shape == (EPISODE, 240, 320, 3)
    assert frames.std() > 10  # a drawn scene, not a blank buffer
    assert not np.array_equal(frames[0], frames[-1])  # the cart and pole move


def test_eval_video_without_gl_writes_the_html_viewer_and_says_why(tiny_run, tmp_path,
                                                                     monkeypatch, capsys):
    from ppox.envs import playground
    from ppox.host import video

    def no_gl(*args, **kwargs):
        raise RuntimeError("eglInitialize failed: no display\nsecond line")

    monkeypatch.setattr(playground, "render_frames", no_gl)
    monkeypatch.setattr(video, "prefer_offscreen_gl", lambda: "")  # MUJOCO_GL as set here
    monkeypatch.setenv("MUJOCO_GL", "egl")
    gif = tmp_path / "episode.gif"
    assert main(["eval", str(tiny_run), "--video", str(gif), "--episodes", "1",
                 "--no-html"]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [line for line in out if line.startswith("video:")]
    assert notes == [
        "video: MuJoCo cannot render offscreen here (RuntimeError: eglInitialize failed: no "
        "display; with MUJOCO_GL='egl', read when mujoco was first imported); wrote brax's "
        "HTML viewer instead"], out
    html = tmp_path / "episode.html"
    assert f"wrote {html} (brax's HTML viewer; episode return" in "\n".join(out)
    assert not gif.exists()
    page = html.read_text()
    assert "viewer.js" in page
    # the page carries the episode: one pose per step for each of the cart and the pole
    blob = re.search(r'var system = "([A-Za-z0-9+/=]+)";', page)
    assert blob is not None, page[:500]
    system = json.loads(zlib.decompress(base64.b64decode(blob.group(1))))
    assert len(system["states"]["x"]) == EPISODE
    assert np.asarray(system["states"]["x"][0]["pos"]).shape == (2, 3)


def test_the_runs_env_options_are_its_env_table_and_a_resume_keeps_them(tiny_run, capsys):
    stored = tomllib.loads((tiny_run / "config.toml").read_text())
    assert stored["env"] == {"id": "playground/CartpoleBalance", "episode_length": EPISODE}
    assert "env_config" not in stored["config"]
    # resuming reads the settings back from config.toml and finds them unchanged
    assert main(["train", "--run-dir", str(tiny_run), "--resume", "--quiet"]) == 0
    assert "the run is complete" in capsys.readouterr().out
    # a changed option is refused before anything is built
    assert main(["train", "--run-dir", str(tiny_run), "--resume", "--quiet",
                 "--env-config", "episode_length=31"]) == 2
    assert "env_config: 'episode_length=31' here, 'episode_length=30' in the run" in \
        capsys.readouterr().err
