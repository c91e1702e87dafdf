"""What would a persistent decode kernel pay per stage? A grid-wide barrier inside one
Triton launch against a kernel launch, both measured on the GPU.

A decode layer is seven dependent kernels today, and each launch costs ~3 µs of ramp-up
and drain beyond its work (docs/benchmarks.md). A persistent kernel would run the
stages back to back in one launch, separated by grid-wide barriers (every program
arrives on a counter, then waits until all have). This measures that handoff:

* ``barrier``: one program per SM, STAGES stages; in each stage a program reads its
  neighbour's block of the previous stage (written by another SM), adds one, writes its
  own block, then meets the others at the barrier. The result is checked: a barrier that
  let a program run ahead would leave a stale value somewhere.
* ``launches``: the same stage as its own kernel, STAGES launches back to back (with
  programmatic dependent launch on Hopper, as the decode kernels run).

Both are timed in a CUDA graph; µs per stage is the slope over STAGES. Barrier variants:
polling the counter with an atomic (``atomic``) or with a volatile load (``volatile``).

    python benchmarks/grid_barrier_experiment.py --json OUT      # GPU only: the CPU
    interpreter runs programs one after another, so a spinning program never returns.
"""

import argparse
import json

import torch
import triton
import triton.language as tl

from _timing import graph_us

from quamba.eval import bench as B
from quamba.kernels.triton._common import pdl_launch_options, pdl_wait


@triton.jit
def _grid_barrier(count_ptr, target, VOLATILE_POLL: tl.constexpr):
    """Arrive, then wait until `target` arrivals. The counter only grows (the host zeroes
    it before each launch), so stage s waits for (s + 1) * programs."""
    tl.debug_barrier()                                    # this program's stores first
    tl.atomic_add(count_ptr, 1, sem="release", scope="gpu")
    if VOLATILE_POLL:
        while tl.load(count_ptr, volatile=True) < target:
            pass
        tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")   # order the reads after it
    else:
        while tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu") < target:
            pass
    tl.debug_barrier()


@triton.jit
def _stage(buf_ptr, s, pid, nprog, BLOCK: tl.constexpr):
    """Stage s: block pid of buffer s % 2 = block (pid + 1) of buffer (s + 1) % 2, plus one."""
    offs = tl.arange(0, BLOCK)
    src = buf_ptr + ((s + 1) % 2) * nprog * BLOCK + ((pid + 1) % nprog) * BLOCK
    dst = buf_ptr + (s % 2) * nprog * BLOCK + pid * BLOCK
    v = tl.load(src + offs, cache_modifier=".cg")         # from L2: another SM wrote it
    tl.store(dst + offs, v + 1)


@triton.jit
def _persistent_kernel(buf_ptr, count_ptr, STAGES: tl.constexpr, BLOCK: tl.constexpr,
                       VOLATILE_POLL: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    for s in range(STAGES):
        _stage(buf_ptr, s, pid, nprog, BLOCK)
        _grid_barrier(count_ptr, (s + 1) * nprog, VOLATILE_POLL)


@triton.jit
def _one_stage_kernel(buf_ptr, s, BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    pid = tl.program_id(0)
    pdl_wait(USE_PDL)
    _stage(buf_ptr, s, pid, tl.num_programs(0), BLOCK)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True)
    parser.add_argument("--stages", default="1,8,64")
    args = parser.parse_args()
    dev = torch.device("cuda")
    nprog = torch.cuda.get_device_properties(dev).multi_processor_count
    block = 256
    stages_list = [int(s) for s in args.stages.split(",")]
    rows = []

    def fresh():
        return (torch.zeros(2, nprog, block, dtype=torch.int32, device=dev),
                torch.zeros(1, dtype=torch.int32, device=dev))

    for variant in ("atomic", "volatile", "launches"):
        for stages in stages_list:
            buf, count = fresh()

            def run(buf=buf, count=count, stages=stages, variant=variant):
                buf.zero_()
                count.zero_()
                if variant == "launches":
                    for s in range(stages):
                        _one_stage_kernel[(nprog,)](buf, s, BLOCK=block, **pdl_launch_options(dev))
                else:
                    _persistent_kernel[(nprog,)](buf, count, STAGES=stages, BLOCK=block,
                                                 VOLATILE_POLL=variant == "volatile", num_warps=4)
            run()
            torch.cuda.synchronize()
            # After S stages every block of the last buffer holds S (each stage adds one along the ring).
            ok = bool((buf[(stages - 1) % 2] == stages).all())
            us = graph_us([run])
            rows.append(dict(variant=variant, stages=stages, us=us, correct=ok))
            print(rows[-1], flush=True)

    per_stage = {}
    for variant in ("atomic", "volatile", "launches"):
        pts = sorted((r["stages"], r["us"]) for r in rows if r["variant"] == variant)
        (s0, t0), (s1, t1) = pts[0], pts[-1]
        per_stage[variant] = (t1 - t0) / (s1 - s0)
    print("µs per stage (slope):", per_stage)
    json.dump({"environment": B.environment(), "programs": nprog, "block": block, "rows": rows,
               "us_per_stage": per_stage}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
