"""Videos of a trained policy: one deterministic episode as a GIF or MP4.

Frames come from the environments' own renderers: gymnax's (classic control through
gymnasium's pygame renderer; MinAtar, Catch, mazes and PointRobot through matplotlib, drawn
on an Agg canvas, so no display is needed), brax's MuJoCo renderer and, for MuJoCo
Playground, ``mujoco.Renderer`` (both offscreen through EGL or OSMesa, as ``MUJOCO_GL``
says). Where MuJoCo cannot render offscreen, the episode is written as brax's HTML viewer
instead. The files are encoded by imageio (Pillow for GIF, imageio-ffmpeg for MP4).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ppox.config import ConfigError

VIDEO_SUFFIXES = (".gif", ".mp4")


@dataclass
class VideoOutput:
    """What ``record_video`` wrote: ``path`` (the video, or the HTML page when brax could
    not render offscreen), ``frames`` drawn, ``renderer`` (which one, in words),
    and the recorded episode's return and length."""

    path: Path
    frames: int
    renderer: str
    episode_return: float
    episode_length: int
    note: str = ""


# MUJOCO_GL value -> the shared library it loads (a missing one makes `import mujoco` itself
# fail: PyOpenGL raises AttributeError, which mujoco does not catch)
GL_LIBRARIES = {"egl": "EGL", "osmesa": "OSMesa"}
GL_INSTALL = "apt-get install libegl1 libgl1 for EGL, or libosmesa6 for OSMesa"
_gl_problem = ""  # why offscreen GL was turned off by prefer_offscreen_gl, for the note


def prefer_offscreen_gl() -> str:
    """Chooses MuJoCo's GL backend before mujoco is first imported (brax and Playground
    import it): the user's ``MUJOCO_GL`` if its library is installed, else the first of EGL
    and OSMesa that is. Where none is, ``MUJOCO_GL=disable`` (mujoco then imports, and
    renderers fail, which the caller turns into the HTML viewer); returns why, or ""."""
    global _gl_problem
    import ctypes.util

    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen and chosen not in GL_LIBRARIES:
        return ""  # glfw, glx, disable, ...: the user's call
    if chosen:
        missing = ctypes.util.find_library(GL_LIBRARIES[chosen]) is None
        _gl_problem = (f"MUJOCO_GL={chosen} but lib{GL_LIBRARIES[chosen]} is not installed; "
                       f"{GL_INSTALL}") if missing else ""
    else:
        found = [gl for gl, lib in GL_LIBRARIES.items() if ctypes.util.find_library(lib)]
        chosen = found[0] if found else ""
        _gl_problem = "" if found else f"neither libEGL nor libOSMesa is installed; {GL_INSTALL}"
    os.environ["MUJOCO_GL"] = "disable" if _gl_problem else chosen
    return _gl_problem


def _figure_rgb(draw: Callable[[Any], None], size: tuple[float, float] = (4.0, 4.0),
                dpi: int = 80) -> np.ndarray:
    """``draw(ax)`` on a fresh Agg figure, returned as ``[H, W, 3] uint8``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw(ax)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _gymnax_frames(gymnax_env: Any, params: Any, states: list[Any]) -> tuple[list, str]:
    """Frames of gymnax states with gymnax's own visualisers."""
    name = gymnax_env.name
    from gymnax.visualize import vis_gym

    if name in vis_gym.SUPPORTED_GYM_ENVS:
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame: no sound device here
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        try:
            import gymnasium
            import pygame  # noqa: F401  (gymnasium's classic-control renderer)
        except ImportError:
            raise ConfigError(f"a video of {name} needs pygame (gymnasium's classic-control "
                              "renderer): pip install 'ppox[video]'") from None
        env = gymnasium.make(name, render_mode="rgb_array")
        try:
            env.reset(seed=0)
            inner = env.unwrapped
            vis_gym.set_gym_params(inner, name, params)
            frames = []
            for s in states:
                inner.state = vis_gym.get_gym_state(s, name)
                if name == "Pendulum-v1":
                    inner.last_u = np.asarray(s.last_u, np.float64)
                frames.append(np.asarray(env.render()))
        finally:
            env.close()
        return frames, "gymnax's classic-control renderer (gymnasium, pygame)"
    from gymnax.visualize import vis_catch, vis_circle, vis_maze, vis_minatar

    if name.endswith("-MinAtar") or name == "Pong-misc":
        init = vis_minatar.init_minatar
    elif name == "Catch-bsuite":
        init = vis_catch.init_catch
    elif name in ("MetaMaze-misc", "FourRooms-misc"):
        init = vis_maze.init_maze
    elif name == "PointRobot-misc":
        init = vis_circle.init_circle
    else:
        raise ConfigError(f"gymnax has no renderer for {name}; videos exist for classic "
                          "control, MinAtar, Catch, the mazes and PointRobot")
    frames = [_figure_rgb(lambda ax, s=s: init(ax, gymnax_env, s, params)) for s in states]
    return frames, "gymnax's matplotlib renderer (Agg, headless)"


def _brax_frames(brax_env: Any, states: Any, length: int) -> list[np.ndarray]:
    from brax.io import image

    pipeline = states.inner.inner.pipeline_state
    traj = [jax.tree.map(lambda x, i=i: x[i], pipeline) for i in range(max(1, length))]
    return list(image.render_array(brax_env.env.sys, traj, height=240, width=320))


@dataclass
class _MujocoEpisode:
    """A brax or Playground episode drawn by MuJoCo: ``frames`` at ``fps`` by ``renderer``,
    or, where MuJoCo could not render offscreen, no frames and the ``html`` viewer page with
    the one-line ``note`` saying why."""

    frames: list[np.ndarray]
    fps: float
    renderer: str
    html: str = ""
    note: str = ""


def _mujoco_frames(env_id: str, env: Any, states: Any, length: int) -> _MujocoEpisode:
    gl = os.environ.get("MUJOCO_GL", "")
    if env_id.startswith("playground/"):
        from ppox.envs import playground

        draw, html, dt, who = (playground.render_frames, playground.render_html,
                               playground.agent_dt(env), "MuJoCo's offscreen renderer")
    else:
        from ppox.envs.brax import render_html

        draw, html, dt, who = (_brax_frames, render_html, float(env.env.dt),
                               "brax's MuJoCo renderer")
    try:
        return _MujocoEpisode(draw(env, states, length), 1.0 / dt, f"{who} (MUJOCO_GL={gl})")
    except Exception as err:  # no offscreen GL (EGL/OSMesa) on this machine
        why = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
        why = _gl_problem or (f"{type(err).__name__}: {why}; with MUJOCO_GL={gl!r}, read "
                              "when mujoco was first imported")
        note = f"MuJoCo cannot render offscreen here ({why}); wrote brax's HTML viewer instead"
        return _MujocoEpisode([], 0.0, "brax's HTML viewer", html(env, states, length), note)


def write_video(path: str | Path, frames: list[np.ndarray], fps: float) -> Path:
    """Encodes ``frames`` (``[H, W, 3] uint8`` each) as a GIF (looping) or MP4 by suffix."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = np.stack([np.asarray(f, np.uint8) for f in frames])
    if path.suffix.lower() == ".gif":
        iio.imwrite(path, stack, extension=".gif", duration=1000.0 / fps, loop=0)
    else:
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError("an MP4 needs imageio-ffmpeg: pip install 'ppox[video]' "
                              "(or write a .gif)") from None
        h, w = stack.shape[1:3]
        stack = np.pad(stack, ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0)))  # codec blocks
        iio.imwrite(path, stack, plugin="FFMPEG", fps=fps)
    return path


def record_video(run_dir: str | Path, path: str | Path, seed: int = 0, run_index: int = 0,
                 max_frames: int = 1000, fps: float | None = None) -> VideoOutput:
    """Plays one deterministic episode of a trained run and writes it to ``path``
    (``.gif`` or ``.mp4``). Episodes longer than ``max_frames`` keep every k-th frame."""
    from ppox.evaluate import jit_evaluate
    from ppox.host.configfile import atomic_write_text
    from ppox.host.evaluation import load_policy

    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"--video {path}: the file must end in .gif or .mp4")
    prefer_offscreen_gl()  # before brax imports mujoco (loading a brax policy does)
    pol = load_policy(run_dir, run_index)
    evaluate = jit_evaluate(pol.cfg, 1, deterministic=True, keep_states=True)
    returns, lengths, states = evaluate(jax.random.PRNGKey(seed), pol.params, pol.obs_stats)
    length = int(lengths[0])
    step = max(1, -(-length // max_frames))
    from ppox.trainer import env_for

    env = env_for(pol.cfg).env
    out = dict(episode_return=float(returns[0]), episode_length=length)
    if pol.cfg.is_brax or pol.cfg.env_id.startswith("playground/"):
        drawn = _mujoco_frames(pol.cfg.env_id, env, states, length)
        if drawn.html:
            html = path.with_suffix(".html")
            atomic_write_text(html, drawn.html)
            return VideoOutput(html, 0, drawn.renderer, **out, note=drawn.note)
        frames, renderer, fps = drawn.frames[::step], drawn.renderer, fps or drawn.fps
    else:
        inner = jax.tree.map(np.asarray, states.inner)
        picked = [jax.tree.map(lambda x, i=i: x[i], inner) for i in range(0, length, step)]
        frames, renderer = _gymnax_frames(env.env, env.params, picked)
        fps = fps or (20.0 if env.env.name in _FAST else 10.0)
    write_video(path, frames, fps / step if step > 1 else fps)
    return VideoOutput(path, len(frames), renderer, **out)


_FAST = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0",
         "MountainCarContinuous-v0")

__all__ = ["VideoOutput", "record_video", "write_video"]
