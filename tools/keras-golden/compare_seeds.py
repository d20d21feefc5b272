"""Mean test accuracy ± standard error of the trainer and of Keras over seeds, and their
difference, from `trainer fit --metrics` files (`test_accuracy_f32`) or lines of JSON with a
`test_accuracy` (as `accuracy.py` prints, one line per seed), on either side:

    python3 tools/keras-golden/compare_seeds.py --trainer m*.json --keras keras.jsonl

The standard error of a mean is sd/√n; the difference's is the two combined (√(se₁² + se₂²):
the seeds of the two sides draw from different generators, so they are not paired), with a
two-sided p-value from the normal approximation.
"""

import argparse
import json
import math
import statistics


def summary(values):
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, sd / math.sqrt(len(values)), sd


def accuracies(path):
    """The test accuracies (%) in a file: a `trainer fit --metrics` file, or JSON lines."""
    with open(path) as f:
        text = f.read()
    try:
        return [100 * json.loads(text)["test_accuracy_f32"]]
    except json.JSONDecodeError:
        return [100 * json.loads(line)["test_accuracy"] for line in text.splitlines() if line.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trainer", nargs="+", required=True, help="trainer fit --metrics files, or JSON lines")
    parser.add_argument("--keras", nargs="+", required=True, help="accuracy.py's output")
    args = parser.parse_args()
    trainer = [a for path in args.trainer for a in accuracies(path)]
    keras = [a for path in args.keras for a in accuracies(path)]
    sides = {}
    for name, values in (("trainer", trainer), ("keras", keras)):
        mean, se, sd = summary(values)
        sides[name] = (mean, se)
        print(f"{name}: {len(values)} seeds, mean {mean:.3f} % ± {se:.3f} (standard error; sd {sd:.3f})")
    difference = sides["trainer"][0] - sides["keras"][0]
    se = math.hypot(sides["trainer"][1], sides["keras"][1])
    z = difference / se if se else float("inf")
    p = math.erfc(abs(z) / math.sqrt(2))
    print(
        f"trainer − keras: {difference:+.3f} point ± {se:.3f} (z = {z:.2f}, two-sided p = {p:.2f}; "
        f"95 % interval {difference - 1.96 * se:+.3f} to {difference + 1.96 * se:+.3f})"
    )


if __name__ == "__main__":
    main()
