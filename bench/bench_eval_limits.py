"""What bounded evaluation costs: a forked child with rlimits vs the in-process thread.

Not a test. Each run is a fresh ``python`` process that imports the evaluator and evaluates one
build file once, as ``envd build`` does; the two modes are interleaved so machine load hits both.
Prints the median (min) evaluation time of each and their ratio.

    .venv/bin/python bench/bench_eval_limits.py --runs 15 [--path examples/python-basic]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ONE_SHOT = """
import sys, time
from pathlib import Path
from envd_core.envdfile.lang import evaluator
from envd_core.envdfile.lang.limits import EvalLimits
ctx = Path(sys.argv[1])
start = time.perf_counter()
evaluator.evaluate(ctx / "build.envd", context_dir=ctx,
                   limits=EvalLimits(isolate=sys.argv[2] == "fork"), check_buildable=False)
print(time.perf_counter() - start)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--path", default=str(Path(__file__).parents[1] / "examples"
                                              / "python-basic"))
    args = parser.parse_args()
    times: dict[str, list[float]] = {"fork": [], "thread": []}
    for _ in range(args.runs):
        for mode in times:
            out = subprocess.run([sys.executable, "-c", ONE_SHOT, args.path, mode],
                                 check=True, capture_output=True, text=True).stdout
            times[mode].append(float(out.strip().splitlines()[-1]))
    for mode, values in times.items():
        print(f"{mode:7s} median {statistics.median(values) * 1000:7.1f} ms "
              f"(min {min(values) * 1000:6.1f} ms) over {len(values)} runs")
    ratio = statistics.median(times["fork"]) / statistics.median(times["thread"])
    print(f"fork / thread: {ratio:.2f}x")


if __name__ == "__main__":
    main()
