"""Runs every benchmark of bench/ side by side with its PyTorch twin and writes bench/RESULTS.md
and bench/results.json.

    cargo bench --no-run && python bench/run.py [--rounds 5] [--python PATH] [--only ebgan,gan,kernels [--update]]

Interleaved A/B rounds: for each thread count (1, 2) and each round, the Rust binary and the
PyTorch script run one after the other (which goes first alternates); each reports the median of
its timed iterations, and the table shows the median over rounds of each side's time and of the
ratio of each round's pair. PyTorch comes from PyPI (`pip install torch numpy`); it is not
part of CI.

Then the kernels (`kernels` in --only): bench/kernels.rs and its twin bench/torch/kernels.py, in the
same interleaved rounds, for the GEMM- and convolution-bound cases: milliseconds, ratio, GFLOP/s, and
that rate as a share of the machine's fp32 peak measured by the same binary at the same thread count
(its `peak fma` case: independent fused multiply-adds in the widest vectors the CPU has).
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


def json_lines(cmd, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def kernel_records(rounds, python):
    """One record per GEMM/convolution-bound case and thread count: medians over interleaved rounds
    of ours and PyTorch's times, the median of each round's ratio, our GFLOP/s and its share of the
    peak measured in the same rounds."""
    binary = rust_binary("kernels")
    records = []
    for threads in (1, 2):
        ours, theirs = [], []
        for i in range(rounds):
            runs = [("ours", [binary, "--bench"]),
                    ("theirs", [python, str(ROOT / "bench/torch/kernels.py"), "--threads", str(threads)])]
            for who, cmd in (runs if i % 2 == 0 else runs[::-1]):
                lines = {r["case"]: r for r in json_lines(cmd, threads)}
                (ours if who == "ours" else theirs).append(lines)
        peak = statistics.median(r["peak fma"]["gflops"] for r in ours)
        for case in theirs[0]:
            o = statistics.median(r[case]["ours_ms"] for r in ours)
            t = statistics.median(r[case]["pytorch_ms"] for r in theirs)
            pairs = sorted(x[case]["ours_ms"] / y[case]["pytorch_ms"] for x, y in zip(ours, theirs))
            gflops = statistics.median(r[case]["gflops"] for r in ours)
            records.append({"case": case, "threads": threads, "ours_ms": round(o, 3), "pytorch_ms": round(t, 3),
                            "ratio": round(statistics.median(pairs), 3), "gflops": round(gflops, 1),
                            "peak_gflops": round(peak, 1), "peak_share": round(gflops / peak, 3)})
    return records


def cpu_name():
    """The CPU's model name, with its widest vector extension (the same model name can come with or
    without AVX-512 on these machines, and the results differ with it)."""
    name, flags = platform.processor(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and name == platform.processor():
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        return name
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name} ({vectors})"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--python", default=os.environ.get("PYTHON", "python3"))
    p.add_argument("--only", help="comma-separated families (e.g. ebgan,gan) and/or kernels: run these only and "
                                  "print their records (no files written unless --update)")
    p.add_argument("--update", action="store_true", help="with --only: replace these records in bench/results.json, "
                                                         "keep the others, and write bench/RESULTS.md again")
    a = p.parse_args()
    only = set(a.only.split(",")) if a.only else None
    torch_version = subprocess.run([a.python, "-c", "import torch; print(torch.__version__)"], check=True,
                                   capture_output=True, text=True).stdout.strip()
    records = []
    kernels = kernel_records(a.rounds, a.python) if only is None or "kernels" in only else []
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
    for r in records + kernels:
        print(json.dumps(r))
    if only is not None and not a.update:
        return
    stamp = datetime.date.today().isoformat()
    machine = f"{cpu_name()}, {os.cpu_count()} logical CPUs"
    section = {"date": stamp, "machine": machine, "torch": torch_version, "rounds": a.rounds}
    results = {}
    if a.update and (ROOT / "bench/results.json").exists():
        results = json.loads((ROOT / "bench/results.json").read_text())
    if records:
        # With --update, the families measured now replace their old records; the rest stay, each
        # with the date and rounds of its own run.
        for r in results.get("records", []):
            r.setdefault("date", results.get("date"))
            r.setdefault("rounds", results.get("rounds", 3))
        for r in records:
            r.update(date=stamp, rounds=a.rounds)
        kept = [r for r in results.get("records", []) if (r["family"], r["step"], r["threads"])
                not in {(n["family"], n["step"], n["threads"]) for n in records}]
        results.update(section)
        results["records"] = sorted(kept + records, key=lambda r: ([b[0] for b in BENCHES].index(r["family"])
                                                                    if r["family"] in [b[0] for b in BENCHES] else 99,
                                                                    r["threads"], r["step"] != "train"))
    if kernels:
        results["kernels"] = kernels
        results["kernels_measured"] = section
    (ROOT / "bench/results.json").write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "bench/RESULTS.md").write_text(render(results))


def render(results):
    """bench/RESULTS.md from the contents of bench/results.json."""
    lines = ["# Benchmarks\n"]
    if results.get("records"):
        runs = {(r.get("date", results["date"]), r.get("rounds", results.get("rounds", 3))) for r in results["records"]}
        if len(runs) == 1:
            (date, rounds), = runs
            when, extra, sep = f"Measured {date} on", "", ""
            lines.append(f"{when} {results['machine']}; PyTorch {results['torch']}; {rounds} interleaved rounds, medians.")
        else:
            # Rows from runs of different days (`--update`): each row says when, and over how many rounds.
            extra, sep = " measured (rounds) |", "---|"
            lines.append(f"Measured on {results['machine']}; PyTorch {results['torch']}; interleaved rounds, medians; "
                         "each row's date and rounds in its last column.")
        lines += ["Ratio = ours / PyTorch (below 1 is faster than PyTorch): the median over rounds of the ratio of each",
                  "round's two runs, which ran back to back; the range is the lowest and highest round's ratio.\n",
                  "| family | step | threads | ours (ms) | PyTorch (ms) | ratio | ratio range | peak RSS ours (MB) | peak RSS PyTorch (MB) |" + extra,
                  "|---|---|---|---|---|---|---|---|---|" + sep]
        for r in results["records"]:
            when = f" {r.get('date', results['date'])} ({r.get('rounds', results.get('rounds', 3))}) |" if extra else ""
            lines.append(f"| {r['family']} | {r['step']} | {r['threads']} | {r['ours_ms']} | {r['pytorch_ms']} | {r['ratio']} | "
                         f"{r['ratio_min']}-{r['ratio_max']} | {r['peak_rss_mb']} | {r['pytorch_peak_rss_mb']} |{when}")
    kernels = results.get("kernels", [])
    if kernels:
        m = results["kernels_measured"]
        peaks = {r["threads"]: r["peak_gflops"] for r in kernels}
        lines += ["", "## Kernels\n",
                  f"Measured {m['date']} on {m['machine']}; PyTorch {m['torch']}; {m['rounds']} interleaved rounds, medians.",
                  "Forward + backward of one layer (`cargo bench --bench kernels`, twin `bench/torch/kernels.py`; the",
                  "matmul forward only). Peak: this machine's fp32 rate measured in the same rounds by independent fused",
                  f"multiply-adds in its widest vectors, {peaks.get(1)} GFLOP/s on one thread and {peaks.get(2)} on two.\n",
                  "| case | threads | ours (ms) | PyTorch (ms) | ratio | ours (GFLOP/s) | share of peak |",
                  "|---|---|---|---|---|---|---|"]
        for r in kernels:
            lines.append(f"| {r['case']} | {r['threads']} | {r['ours_ms']} | {r['pytorch_ms']} | {r['ratio']} | "
                         f"{r['gflops']} | {round(100 * r['peak_share'])} % |")
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    main()
