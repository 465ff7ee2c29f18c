"""Runs every benchmark of bench/ side by side with its PyTorch twin and writes bench/RESULTS.md
and bench/results.json.

    cargo bench --no-run && python bench/run.py [--rounds 5] [--python PATH] [--only ebgan,gan]

Interleaved A/B rounds: for each thread count (1, 2) and each round, the Rust binary and the
PyTorch script run one after the other (which goes first alternates); each reports the median of
its timed iterations, and the table shows the median over rounds of each side's time and of the
ratio of each round's pair. PyTorch comes from PyPI (`pip install torch numpy`); it is not
part of CI.
"""
import argparse
import datetime
import glob
import json
import os
import pathlib
import platform
import statistics
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
# (family shown in the table, Rust bench binary, PyTorch twin in bench/torch, arguments for both)
BENCHES = [("judge", "judge", "judge", []), ("ebgan", "ebgan", "ebgan", ["--model", "ebgan"]),
           ("ebgan-d2", "ebgan", "ebgan", ["--model", "ebgan-d2"]),
           ("gan", "ebgan", "ebgan", ["--model", "gan"]), ("infogan", "ebgan", "cgan", ["--model", "infogan"]),
           ("acgan", "ebgan", "cgan", ["--model", "acgan"]), ("msgan", "ebgan", "cgan", ["--model", "msgan"]),
           ("dann", "dann", "dann", ["--model", "dann"]), ("ddc", "dann", "dann", ["--model", "ddc"]),
           ("source-only", "dann", "dann", ["--model", "source-only"])]


def rust_binary(name):
    cands = [p for p in glob.glob(str(ROOT / f"target/release/deps/{name}-*")) if os.access(p, os.X_OK) and not p.endswith(".d")]
    if not cands:
        raise SystemExit(f"no benchmark binary for {name}: run `cargo bench --no-run` first")
    return max(cands, key=os.path.getmtime)


def run_json(cmd, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--python", default=os.environ.get("PYTHON", "python3"))
    p.add_argument("--only", help="comma-separated families (e.g. ebgan,gan): print their table only, write no files")
    a = p.parse_args()
    only = set(a.only.split(",")) if a.only else None
    torch_version = subprocess.run([a.python, "-c", "import torch; print(torch.__version__)"], check=True,
                                   capture_output=True, text=True).stdout.strip()
    records = []
    for family, name, twin, args in BENCHES:
        if only is not None and family not in only:
            continue
        binary = rust_binary(name)
        for threads in (1, 2):
            ours, theirs = [], []
            for i in range(a.rounds):
                # Alternate which of the two runs first, so that neither always follows the other.
                runs = [("ours", [binary, "--bench", *args]),
                        ("theirs", [a.python, str(ROOT / f"bench/torch/{twin}.py"), "--threads", str(threads), *args])]
                for who, cmd in (runs if i % 2 == 0 else runs[::-1]):
                    (ours if who == "ours" else theirs).append(run_json(cmd, threads))
            for kind in ("train", "infer"):
                o = statistics.median(r[f"{kind}_ms"] for r in ours)
                t = statistics.median(r[f"{kind}_ms"] for r in theirs)
                # The ratio of each round's pair (run back to back, so at the same machine speed),
                # and their median: this machine's speed drifts by 10-30 % within minutes, which a
                # ratio of the two medians would take for a difference between the two.
                pairs = sorted(x[f"{kind}_ms"] / y[f"{kind}_ms"] for x, y in zip(ours, theirs))
                records.append({"family": family, "step": kind, "threads": threads, "ours_ms": round(o, 3),
                                "pytorch_ms": round(t, 3), "ratio": round(statistics.median(pairs), 3),
                                "ratio_min": round(pairs[0], 3), "ratio_max": round(pairs[-1], 3),
                                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in ours), 1),
                                "pytorch_peak_rss_mb": round(max(r["peak_rss_mb"] for r in theirs), 1)})
    if only is not None:
        for r in records:
            print(json.dumps(r))
        return
    stamp = datetime.date.today().isoformat()
    machine = f"{cpu_name()}, {os.cpu_count()} logical CPUs"
    (ROOT / "bench/results.json").write_text(json.dumps({"date": stamp, "machine": machine, "torch": torch_version, "records": records}, indent=2) + "\n")
    lines = [f"# Benchmarks\n", f"Measured {stamp} on {machine}; PyTorch {torch_version}; {a.rounds} interleaved rounds, medians.",
             "Ratio = ours / PyTorch (below 1 is faster than PyTorch): the median over rounds of the ratio of each",
             "round's two runs, which ran back to back; the range is the lowest and highest round's ratio.\n",
             "| family | step | threads | ours (ms) | PyTorch (ms) | ratio | ratio range | peak RSS ours (MB) | peak RSS PyTorch (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['family']} | {r['step']} | {r['threads']} | {r['ours_ms']} | {r['pytorch_ms']} | {r['ratio']} | "
                     f"{r['ratio_min']}-{r['ratio_max']} | {r['peak_rss_mb']} | {r['pytorch_peak_rss_mb']} |")
    (ROOT / "bench/RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
