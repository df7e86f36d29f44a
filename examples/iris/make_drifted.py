"""Makes a drifted batch of iris measurements: the rows of data/iris.csv, each used in
turn (in a shuffled order, so the species stay balanced), with every measurement scaled by
--scale and shifted by --shift (centimetres), plus a little noise; the species stays. The shipped samples/drifted.csv and samples/drifted-more.csv came from

    python make_drifted.py --seed 1 --out samples/drifted.csv
    python make_drifted.py --seed 2 --out samples/drifted-more.csv

and are two batches of the same shifted distribution (a camera recalibrated, say); a
larger --shift makes a third one. Only the standard library is needed."""
import argparse
import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--scale", type=float, default=1.3)
    parser.add_argument("--shift", type=float, default=0.8)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    with open(HERE / "data" / "iris.csv", newline="") as f:
        base = list(csv.DictReader(f))
    rng = random.Random(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so a watcher never reads half a file.
    partial = args.out.with_name(f".{args.out.name}.partial")
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FEATURES + ["species"])
        order = []
        while len(order) < args.rows:
            order.extend(rng.sample(base, len(base)))
        for row in order[:args.rows]:
            values = [float(row[name]) * args.scale + args.shift + rng.gauss(0, args.noise) for name in FEATURES]
            writer.writerow([f"{v:.2f}" for v in values] + [row["species"]])
    partial.rename(args.out)
    print(f"wrote {args.rows} rows to {args.out}")


if __name__ == "__main__":
    main()
