"""``benchmarks/hlo_census.py``: the op census of a loop body, on hand-written HLO and on
ppox's CartPole training chunk (its SGD step and rollout step found by their dots)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import hlo_census  # noqa: E402

HLO = """\
HloModule m

%fused_dot (p0: f32[8,4], p1: f32[4,2]) -> f32[8,2] {
  %p0 = f32[8,4]{1,0} parameter(0)
  %p1 = f32[4,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%body (arg: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %arg = (s32[], f32[8,4]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%arg), index=0
  %x = f32[8,4]{1,0} get-tuple-element(%arg), index=1
  %w = f32[4,2]{1,0} constant({...})
  %f = f32[8,2]{1,0} fusion(%x, %w), kind=kOutput, calls=%fused_dot
  %d = f32[8,8]{1,0} dot(%x, %x), lhs_contracting_dims={1}, rhs_contracting_dims={1}
  %c = f32[8,4]{1,0} copy(%x)
  ROOT %t = (s32[], f32[8,4]{1,0}) tuple(%i, %c)
}

%cond (arg: (s32[], f32[8,4])) -> pred[] {
  %arg = (s32[], f32[8,4]{1,0}) parameter(0)
  ROOT %p = pred[] constant(true)
}

ENTRY %main (a: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %a = (s32[], f32[8,4]{1,0}) parameter(0)
  ROOT %w = (s32[], f32[8,4]{1,0}) while(%a), condition=%cond, body=%body, \
backend_config={"known_trip_count":{"n":"3"}}
}
"""


def test_census_counts_a_body_own_ops_and_the_dots_inside_its_fusions():
    found = hlo_census.loops(HLO)
    assert len(found) == 1
    (loop,) = found
    assert loop["body"] == "body" and loop["in"] == "main" and loop["trip_count"] == 3
    # fusion + dot + copy run as kernels; parameter, tuple elements, constant, tuple do not
    assert loop["thunks"] == 3 and loop["fusions"] == 1 and loop["copies"] == 1
    assert loop["dots"] == 2  # one stand-alone, one inside the fusion
    assert loop["role"] == "sgd_step"


def test_cartpole_chunk_sgd_and_rollout_steps_are_found():
    res = hlo_census.measure("CartPole-v1:4")
    sgd, rollout = res["sgd_step"], res["rollout_step"]
    assert sgd["trip_count"] == 4  # the 4 minibatches of an epoch
    assert rollout["trip_count"] == 128  # num_steps
    # the forward (6) and backward (up to 10) products of two 3-layer MLPs; XLA may turn a
    # one-column product into a reduction, so not exactly 16
    assert sgd["dots"] >= 12
    # the rollout runs the actor alone on 4 rows: its 4-wide input layer and 2-wide head are
    # multiply-and-sum fusions (nets/torso.dense on few rows), so its 64x64 layer is the dot
    assert rollout["dots"] >= 1
    assert sgd["thunks"] >= sgd["fusions"] + sgd["copies"] > 0
    assert res["minibatch_rows"] == 128
