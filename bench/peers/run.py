"""Side-by-side benchmark of fedkit against Flower, pfl-research and a plain PyTorch loop on the
workloads of bench/peers/workloads.toml (issue 4). See bench/peers/README.md.

    bench/peers/setup.sh && bench/peers/.venv/bin/python bench/peers/run.py
    bench/peers/.venv/bin/python bench/peers/run.py --rounds 1 --reps 1 --workloads w3_logreg   # smoke

For each workload: the config is written to OUT/configs/<workload>.toml, the federation exported
once with `fedkit data export` into OUT/data/<workload>, then the frameworks run interleaved
(rep 1: fedkit, flower, pfl, torch; rep 2: ...), each as its own process whose wall time is measured
from outside (interpreter or binary start to exit). Output: OUT/results.json, OUT/results.md, one
log per run in OUT/logs/, fedkit's run directories and the peers' result files in OUT/runs/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FEDKIT = ROOT / "target" / "release" / "fedkit"
FRAMEWORKS = ["fedkit", "flower", "pfl", "torch"]


def sh(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()


def ensure_fedkit() -> None:
    if not FEDKIT.exists():
        print("building fedkit: cargo build --release -p fedkit-cli", flush=True)
        subprocess.run(["cargo", "build", "--release", "-p", "fedkit-cli"], cwd=ROOT, check=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header(workers: int) -> dict:
    def version(p: str) -> str:
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return "not installed"

    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "fedkit": sh([str(FEDKIT), "--version"]),
        "fedkit_commit": _git_commit(),
        "flwr": version("flwr"),
        "ray": version("ray"),
        "torch": version("torch"),
        "pfl": version("pfl"),
        "numpy": version("numpy"),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "threads": {
            "fedkit": f"RAYON_NUM_THREADS={workers}",
            "flower": f"Simulation Runtime, Ray backend: {workers} actors x 1 CPU, torch.set_num_threads(1) in the ClientApp",
            "pfl": f"{workers} worker processes (PFL_WORKER_ADDRESSES/PFL_WORKER_RANK, torch.distributed gloo) x 1 torch thread",
            "torch": f"{workers} worker processes (multiprocessing, spawn) x 1 torch thread, averaging in the parent",
            "final_eval": "peers: 2 torch threads in the driver / rank 0 after training; fedkit: its own evaluation",
        },
    }


def _git_commit() -> str:
    try:
        return sh(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT) + (
            "+dirty" if sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT) else ""
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_process(cmd: list[str], log: Path, env: dict, timeout: float) -> tuple[float, int | None]:
    """Run `cmd` in its own session with output to `log`; returns (wall seconds, exit code or None
    on timeout). Whatever the run left behind in its process group is ended afterwards."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        try:
            code: int | None = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        wall = time.perf_counter() - t
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)  # the run's own group: leftovers (Ray, samplers) only
            time.sleep(0.5)
        except ProcessLookupError:
            break
    if code is None:
        p.wait()
    return wall, code


def run_fedkit(cfg: Path, out: Path, log: Path, rounds: int | None, workers: int, timeout: float) -> dict:
    cmd = [str(FEDKIT), "run", str(cfg), "--out", str(out), "-q"]
    if rounds:
        cmd += ["--set", f"rounds={rounds}", "--set", f"eval.every={rounds}"]
    env = {**os.environ, "RAYON_NUM_THREADS": str(workers)}
    wall, code = run_process(cmd, log, env, timeout)
    r = {"wall_s": wall, "exit": code, "log": str(log)}
    if code != 0:
        return r
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    last = rows[-1]
    r.update(rounds=last["round"], test_acc=last.get("test_acc"), test_loss=last.get("test_loss"),
             client_loss=last.get("client_loss"))
    t = [json.loads(l) for l in (out / "timings.jsonl").read_text().splitlines() if l.strip()]
    sums = {k: sum(x.get(k, 0.0) for x in t) for k in ("clients_s", "aggregate_s", "eval_s", "other_s", "total_s")}
    r.update(sums)
    r["train_s"] = sums["total_s"] - sums["eval_s"]
    r["startup_s"] = wall - sums["total_s"]  # process start, data build, model init, writing
    return r


def run_peer(fw: str, data: Path, res: Path, log: Path, rounds: int | None, workers: int, timeout: float) -> dict:
    cmd = [sys.executable, str(HERE / f"{fw}_peer.py"), "--data", str(data), "--result", str(res)]
    cmd += ["--actors" if fw == "flower" else "--workers", str(workers)]
    if rounds:
        cmd += ["--rounds", str(rounds)]
    wall, code = run_process(cmd, log, dict(os.environ), timeout)
    r = {"wall_s": wall, "exit": code, "log": str(log)}
    if code == 0 and res.exists():
        got = json.loads(res.read_text())
        r.update({k: got.get(k) for k in ("rounds", "test_acc", "test_loss", "client_loss", "startup_s", "train_s",
                                          "eval_s")})
    elif code == 0:
        r["exit"] = "no result file"
    return r


def summarize(runs: list[dict], frameworks: list[str]) -> dict:
    out = {}
    for fw in frameworks:
        ok = [r for r in runs if r["framework"] == fw and r.get("exit") == 0 and r.get("test_acc") is not None]
        failed = [r for r in runs if r["framework"] == fw and r not in ok]
        if not ok:
            out[fw] = {"n": 0, "failed": len(failed)}
            continue
        walls = [r["wall_s"] for r in ok]
        accs = [r["test_acc"] for r in ok]
        med = lambda k: statistics.median([r[k] for r in ok if r.get(k) is not None] or [float("nan")])  # noqa: E731
        out[fw] = {
            "n": len(ok), "failed": len(failed),
            "wall_median": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
            "acc_median": statistics.median(accs), "acc_min": min(accs), "acc_max": max(accs),
            "loss_median": med("test_loss"),
            "startup_median": med("startup_s"), "train_median": med("train_s"), "eval_median": med("eval_s"),
        }
    base = out.get("fedkit", {}).get("wall_median")
    for fw, s in out.items():
        if s.get("n") and base:
            s["ratio_vs_fedkit"] = s["wall_median"] / base
    return out


def write_reports(out: Path, head: dict, results: dict, frameworks: list[str]) -> None:
    (out / "results.json").write_text(json.dumps({"header": head, "workloads": results}, indent=1))
    h = head
    lines = [
        "# fedkit vs its peers",
        "",
        f"- date: {h['date']}; {h['fedkit']} (commit {h['fedkit_commit']})",
        f"- flwr {h['flwr']} (ray {h['ray']}), torch {h['torch']}, pfl {h['pfl']}, numpy {h['numpy']}, "
        f"python {h['python']}",
        f"- CPU: {h['cpu']}, {h['cores']} cores ({h['cores_usable']} usable); load average at start "
        f"{h['loadavg_at_start']}",
        "- threads: " + "; ".join(f"{k}: {v}" for k, v in h["threads"].items()),
        "- wall time: the whole process, start to exit (interpreter start, imports, data loading and the "
        "final evaluation included), median and min-max over the reps; x fedkit = the peer's median over "
        "fedkit's; phases (medians): startup = until the first round starts, train = the rounds, eval = the "
        "final test-set evaluation",
        "- accuracy: on the whole test set after the last round; median and min-max over the reps "
        "(every framework trains fedkit's exported cohorts in fedkit's batch order, so the accuracies differ "
        "only by floating-point order)",
        "- setups and their known differences: bench/peers/README.md",
        "",
    ]
    for w, res in results.items():
        lines += [f"## {w}: {res['title']}", ""]
        lines += [f"rounds {res['rounds']}, export {res['export_s']:.1f} s, reps {res['reps']}", ""]
        lines += ["| framework | wall s, median (min-max) | x fedkit | test acc, median (min-max) | test loss | startup / train / eval s | runs |",
                  "|---|---|---|---|---|---|---|"]
        for fw in frameworks:
            s = res["summary"].get(fw, {"n": 0, "failed": 0})
            if not s.get("n"):
                lines.append(f"| {fw} | - | - | - | - | - | 0 ok, {s.get('failed', 0)} failed |")
                continue
            ratio = f"{s['ratio_vs_fedkit']:.1f}" if "ratio_vs_fedkit" in s else "-"
            fail = f", {s['failed']} failed" if s["failed"] else ""
            lines.append(
                f"| {fw} | {s['wall_median']:.2f} ({s['wall_min']:.2f}-{s['wall_max']:.2f}) | {ratio} | "
                f"{s['acc_median']:.4f} ({s['acc_min']:.4f}-{s['acc_max']:.4f}) | {s['loss_median']:.4f} | "
                f"{s['startup_median']:.2f} / {s['train_median']:.2f} / {s['eval_median']:.2f} | {s['n']} ok{fail} |"
            )
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", help="comma-separated names from workloads.toml (default: all)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--rounds", type=int, help="override every workload's rounds (smoke tests)")
    ap.add_argument("--out", help="output directory (default runs/peers/<time>)")
    ap.add_argument("--workers", type=int, default=2, help="parallel workers per framework (default 2)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
    ap.add_argument("--keep-data", action="store_true", help="keep OUT/data (the exports, up to ~1 GB each)")
    a = ap.parse_args()

    workloads = tomllib.loads((HERE / "workloads.toml").read_text())
    names = a.workloads.split(",") if a.workloads else list(workloads)
    frameworks = a.frameworks.split(",")
    for n in names:
        if n not in workloads:
            raise SystemExit(f"unknown workload {n!r}; workloads.toml has {', '.join(workloads)}")
    for fw in frameworks:
        if fw not in FRAMEWORKS:
            raise SystemExit(f"unknown framework {fw!r}; choose from {', '.join(FRAMEWORKS)}")
    if sys.prefix == sys.base_prefix and any(fw != "fedkit" for fw in frameworks):
        print("warning: not running in a venv; use bench/peers/setup.sh && bench/peers/.venv/bin/python", file=sys.stderr)

    ensure_fedkit()
    out = Path(a.out) if a.out else ROOT / "runs" / "peers" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    head = header(a.workers)
    print(f"output: {out}", flush=True)
    results: dict = {}
    for w in names:
        spec = workloads[w]
        cfg = out / "configs" / f"{w}.toml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(spec["config"])
        data = out / "data" / w
        t = time.perf_counter()
        subprocess.run([str(FEDKIT), "data", "export", str(cfg), "--out", str(data)], check=True, cwd=ROOT)
        export_s = time.perf_counter() - t
        rounds = a.rounds or tomllib.loads(spec["config"])["rounds"]
        res = results[w] = {"title": spec.get("title", w), "rounds": rounds, "export_s": export_s, "reps": a.reps,
                            "runs": [], "summary": {}}
        for rep in range(1, a.reps + 1):
            for fw in frameworks:
                tag = f"{fw}-rep{rep}"
                log = out / "logs" / w / f"{tag}.log"
                print(f"[{w}] rep {rep}/{a.reps} {fw} ...", end=" ", flush=True)
                if fw == "fedkit":
                    r = run_fedkit(cfg, out / "runs" / w / tag, log, a.rounds, a.workers, a.timeout)
                else:
                    r = run_peer(fw, data, out / "runs" / w / f"{tag}.json", log, a.rounds, a.workers, a.timeout)
                r.update(framework=fw, rep=rep)
                res["runs"].append(r)
                if r.get("exit") == 0:
                    print(f"{r['wall_s']:.2f} s, test_acc {r.get('test_acc')}", flush=True)
                else:
                    print(f"FAILED ({'timeout' if r.get('exit') is None else r.get('exit')}; see {log})", flush=True)
                res["summary"] = summarize(res["runs"], frameworks)
                write_reports(out, head, results, frameworks)
        if not a.keep_data:
            shutil.rmtree(data, ignore_errors=True)
            if not any((out / "data").iterdir()):
                (out / "data").rmdir()
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
