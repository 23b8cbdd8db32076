"""The step protocol and the local runner: a raising row is rejected, batch-mates kept."""

from __future__ import annotations

import pytest

from pf_ray.steps.base import (
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    Resources,
    StepContractError,
    as_step,
    batch_step,
)
from pf_ray.steps.local import LocalRunner, run_local


@batch_step(name="double", inputs=("x",), outputs=("y",), resources=Resources(batch_size=4))
def double(batch: dict) -> dict:
    if any(x == 13 for x in batch["x"]):
        raise ValueError("13 is unlucky")
    return {"y": [2 * x for x in batch["x"]]}


class Offset:
    name = "offset"
    inputs = ("y",)
    outputs = ("z",)
    resources = Resources(batch_size=3)
    instances = 0

    def __init__(self, offset: int):
        Offset.instances += 1
        self.offset = offset

    def __call__(self, batch: dict) -> dict:
        z = [y + self.offset for y in batch["y"]]
        return {"z": z, REJECT_REASON: ["too_big" if v > 40 else None for v in z]}


def test_raising_row_is_rejected_and_batch_mates_kept() -> None:
    xs = list(range(30))
    out = run_local([as_step(double), as_step(Offset, offset=1)], {"id": xs, "x": xs})
    assert len(out["x"]) == 30  # rows in == rows out (marked) -- nothing dropped
    bad = {i: (out[REJECT_STAGE][i], out[REJECT_REASON][i]) for i in range(30)
           if out[REJECT_REASON][i] is not None}
    assert bad[13] == ("double", "exception")
    assert out[REJECT_DETAIL][13] == "ValueError: 13 is unlucky"
    assert all(bad[i] == ("offset", "too_big") for i in bad if i != 13)
    assert sorted(bad) == [13, *range(20, 30)]
    kept = [i for i in range(30) if i not in bad]
    assert [out["z"][i] for i in kept] == [2 * i + 1 for i in kept]
    assert out["y"][13] is None and out["z"][13] is None  # later steps skip rejected rows


def test_class_steps_are_built_once_per_runner() -> None:
    Offset.instances = 0
    runner = LocalRunner([as_step(Offset, offset=0)])
    for _ in range(3):
        runner({"id": [1, 2], "y": [1, 2]})
    assert Offset.instances == 1


def test_contract_violations_fail_loudly() -> None:
    @batch_step(name="dropper", inputs=("x",), outputs=("y",))
    def dropper(batch: dict) -> dict:
        return {"y": batch["x"][:-1]}

    with pytest.raises(StepContractError, match="one to one"):
        run_local([as_step(dropper)], {"id": [1, 2], "x": [1, 2]})

    with pytest.raises(StepContractError, match=r"needs column\(s\) \['x'\]"):
        run_local([as_step(double)], {"id": [1]})

    with pytest.raises(TypeError, match="is not a step"):
        as_step(lambda b: b)
