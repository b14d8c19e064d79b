"""Which GL backend MuJoCo gets for videos: the user's MUJOCO_GL if its library is there,
else EGL, else OSMesa, else none (MUJOCO_GL=disable, so that mujoco still imports) and why."""

import ctypes.util

import pytest

from ppox.host import video


@pytest.fixture
def libs(monkeypatch):
    """Pretend only the given GL libraries are installed."""
    def only(*names):
        monkeypatch.setattr(ctypes.util, "find_library",
                            lambda name: f"lib{name}.so.1" if name in names else None)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(video, "_gl_problem", "")
    return only


@pytest.mark.parametrize("installed, want", [(("EGL", "OSMesa"), "egl"), (("OSMesa",), "osmesa"),
                                             (("EGL",), "egl")])
def test_unset_takes_the_first_installed(libs, monkeypatch, installed, want):
    libs(*installed)
    assert video.prefer_offscreen_gl() == ""
    assert video.os.environ["MUJOCO_GL"] == want


def test_none_installed_disables_gl_and_says_how_to_install(libs):
    libs()
    why = video.prefer_offscreen_gl()
    assert why == ("neither libEGL nor libOSMesa is installed; apt-get install libegl1 libgl1 "
                   "for EGL, or libosmesa6 for OSMesa")
    assert video.os.environ["MUJOCO_GL"] == "disable"
    assert video._gl_problem == why  # the video's note says it


def test_the_users_choice_is_kept_or_refused_with_the_reason(libs, monkeypatch):
    libs("EGL")
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert video.prefer_offscreen_gl().startswith(
        "MUJOCO_GL=osmesa but libOSMesa is not installed; apt-get install")
    assert video.os.environ["MUJOCO_GL"] == "disable"
    monkeypatch.setenv("MUJOCO_GL", "EGL")
    assert video.prefer_offscreen_gl() == "" and video.os.environ["MUJOCO_GL"] == "egl"
    monkeypatch.setenv("MUJOCO_GL", "glfw")  # not an offscreen backend ppox knows: left alone
    assert video.prefer_offscreen_gl() == "" and video.os.environ["MUJOCO_GL"] == "glfw"
