"""The ``bigkern`` command line (also ``python -m bigkern``).

    bigkern info [--json]
        versions, what bigkern._C was built with, the devices visible, the backend setting, and
        which backends can serve each op on each device (with the reason where one cannot)
    bigkern bench [SUITE ...|all] [--device cpu|cuda] [--dtype float32,...] [--quick] [--compile]
                  [--filter TEXT] [--direction D] [--layout L] [--provider NAME,...]
                  [--out FILE] [--no-save]
        run benchmark suites, print the table, save JSON + CSV under benchmarks/results/
    bigkern train TASK [--epochs N] [--batch-size N] [--lr LR] [--optimizer sgd|adam] [--device D]
                  [--backend auto|cpu|cuda|triton|torch] [--amp bf16|fp16] [--compile] [--seed N]
                  [--save FILE] [--load FILE] [--data PATH] [--seq-len N] [--max-chars N]
        train a bundled model on offline data (digits, Shakespeare, a synthetic task) and report
        per-epoch metrics and throughput
    bigkern profile TARGET [--device D] [--steps N] [--batch-size N] [--inference] [--backend B]
                    [--nvtx] [--trace FILE] [--top K]
        torch.profiler over a few steps of a bigkern model or op: a Chrome trace and the top
        operators by self time
    bigkern tune OP... [--quick] [--device cuda:N] | --show | --clear
        time the cuda and triton backends on this GPU and store the faster for `auto`
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import torch

import bigkern
from bigkern import _library, backend
from bigkern.bench import SUITES, environment

BACKEND_ORDER = ("cpu", "cuda", "triton", "torch")


# ---------------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------------


def _visible_devices() -> list[torch.device]:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return devices


def _built_archs() -> set[str]:
    """The compute capabilities bigkern._C has CUDA code for, as digits ("80", "90")."""
    return {re.sub(r"[^0-9]", "", a.lower().replace("+ptx", "")) for a in _library.CUDA_ARCHS}


def _op_support(op: str, device: torch.device) -> dict:
    probe = torch.empty((1, 1, 4, 4), device=device)
    support = {name: backend.why_not(name, op, probe) for name in BACKEND_ORDER}
    auto = next((c for c in backend.auto_candidates(op, probe) if backend.why_not(c, op, probe) is None), "torch")
    return {"backends": {name: {"available": reason is None, "reason": reason} for name, reason in support.items()},
            "auto": auto}  # fmt: skip


def collect_info() -> dict:
    """Everything ``bigkern info`` reports, as plain data."""
    devices = []
    for device in _visible_devices():
        if device.type == "cpu":
            devices.append({
                "device": "cpu", "name": environment.cpu_model(), "cpu_count": os.cpu_count(),
                "torch_num_threads": torch.get_num_threads(),
            })  # fmt: skip
        else:
            props = torch.cuda.get_device_properties(device)
            devices.append({
                "device": str(device), "name": props.name, "capability": f"{props.major}.{props.minor}",
                "memory_bytes": int(props.total_memory),
                "arch_in_build": f"{props.major}{props.minor}" in _built_archs(),
            })  # fmt: skip
    ops = {op: {str(d): _op_support(op, d) for d in _visible_devices()} for op in bigkern.ops.__all__}
    return {
        "bigkern": bigkern.__version__,
        "bigkern_path": str(environment.source_root() / "bigkern"),
        "git_commit": environment.git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": environment.triton_version(),
        "python": sys.version.split()[0],
        "nvidia_driver": environment.nvidia_driver(),
        "extension": {
            "with_cuda_kernels": _library.WITH_CUDA_KERNELS,
            "cuda_archs": list(_library.CUDA_ARCHS),
            "cpu_isa": environment.cpu_isa(),
            "cpu_amx": environment.cpu_amx(),
        },
        "triton_interpret": _library.TRITON_INTERPRET,
        "cuda_available": torch.cuda.is_available(),
        "devices": devices,
        "backend": backend.current_backend(),
        "ops": ops,
    }


def format_info(info: dict) -> str:
    ext = info["extension"]
    lines = [
        f"bigkern   {info['bigkern']}  ({info['bigkern_path']}"
        + (f", git {info['git_commit'][:12]}" if info["git_commit"] else "") + ")",
        f"torch     {info['torch']}",
        f"CUDA      {info['cuda'] or 'none (CPU-only torch build)'}"
        + (f"  (driver {info['nvidia_driver']})" if info["nvidia_driver"] else ""),
        f"Triton    {info['triton'] or 'not installed'}" + ("  (TRITON_INTERPRET=1)" if info["triton_interpret"] else ""),
        f"Python    {info['python']}",
        "",
        "bigkern._C",
        f"  CPU kernels   ISA {ext['cpu_isa'] or 'unknown'}"
        + ("  (convolution; pooling, attention and recurrent kernels use avx2)" if ext["cpu_isa"] == "avx512" else "")
        + ("; AMX tiles for float32 convolutions" if ext.get("cpu_amx") else ""),
        "  CUDA kernels  "
        + (f"yes, for architectures {', '.join(ext['cuda_archs']) or '(none listed)'}" if ext["with_cuda_kernels"]
           else "no (built without a CUDA toolkit)"),
        "",
        "devices",
    ]  # fmt: skip
    for d in info["devices"]:
        if d["device"] == "cpu":
            lines.append(f"  cpu     {d['name']}, {d['cpu_count']} cores, torch uses {d['torch_num_threads']} threads")
        else:
            note = "" if d["arch_in_build"] or not ext["with_cuda_kernels"] else "  (not among the built architectures)"
            lines.append(f"  {d['device']:<7} {d['name']}, compute capability {d['capability']}{note}")
    if not info["cuda_available"]:
        lines.append("  cuda    none visible (torch.cuda.is_available() is False)")
    lines += ["", f"backend   {info['backend']}  (bigkern.use_backend / BIGKERN_BACKEND)", "", "ops"]
    for op, per_device in info["ops"].items():
        lines.append(f"  {op}")
        for device, support in per_device.items():
            ok = [name for name, s in support["backends"].items() if s["available"]]
            lines.append(f"    {device:<7} backends: {', '.join(ok)}; auto -> {support['auto']}")
            for name, s in support["backends"].items():
                if not s["available"]:
                    lines.append(f"            no {name}: {s['reason']}")
    return "\n".join(lines)


def cmd_info(args) -> int:
    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def cmd_bench(args, parser: argparse.ArgumentParser) -> int:
    from bigkern.bench import harness

    if args.suites and args.suites[0] == "plot":
        return cmd_bench_plot(args, parser)
    if args.suites and args.suites[0] == "report":
        return cmd_bench_report(args, parser)
    unknown = [name for name in args.suites if name not in SUITES and name != "all"]
    if unknown:
        parser.error(f"argument SUITE: invalid choice: {unknown[0]!r} (choose from {', '.join([*SUITES, 'all'])})")
    suites = list(SUITES) if not args.suites or "all" in args.suites else list(dict.fromkeys(args.suites))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    custom_cases = None
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"bigkern bench: --device {device} but no CUDA device is visible (torch.cuda.is_available() is False)",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        dtypes = [harness.parse_dtype(d) for d in _comma_list(args.dtype)] if args.dtype else None
    except ValueError as exc:
        parser.error(f"--dtype: {exc}")
    providers = _comma_list(args.provider) if args.provider else None
    if args.shapes:
        from bigkern.bench import shapes

        try:
            custom_cases = shapes.load(args.shapes, device, dtypes, args.quick)
        except shapes.ShapesError as exc:
            parser.error(str(exc))
        if not args.suites:  # the suites the file names
            suites = [name for name in SUITES if name in custom_cases]
    if args.fail_on_regression is not None and not args.compare:
        parser.error("--fail-on-regression needs --compare FILE (the stored run to compare with)")
    baseline = None
    if args.compare:
        from bigkern.bench import compare

        try:
            baseline = compare.load_rows(args.compare)
        except ValueError as exc:
            parser.error(str(exc))
    started = time.perf_counter()
    document = harness.run_benchmark(
        suites,
        device=device,
        dtypes=dtypes,
        quick=args.quick,
        compile=args.compile,
        filters=args.filter or (),
        directions=args.direction,
        layouts=args.layout,
        provider_names=providers,
        progress=not args.no_progress,
        command=args.command_line,
        custom_cases=custom_cases,
    )
    elapsed = time.perf_counter() - started
    ceiling = document["ceiling"]
    print(f"bigkern bench {' '.join(suites)} on {device} ({document['environment']['gpu_name'] or document['environment']['cpu_model']})"
          f"{' --quick' if args.quick else ''}")  # fmt: skip
    line = f"ceiling: copy {ceiling['copy_gbps']:.1f} GB/s"
    if ceiling.get("matmul_tflops"):
        line += "; matmul " + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in ceiling["matmul_tflops"].items())
    print(line)
    start, end = document["environment"].get("load_average"), document.get("load_average_end")
    cores = os.cpu_count() or 1
    if (start and start[0] >= cores) or (end and end[0] >= cores + 1):  # the run itself keeps about one core busy
        print(f"note: load average {start[0] if start else '?'} at the start and {end[0] if end else '?'} at the "
              f"end, on {cores} cores: other work on this machine may make these timings noisy")  # fmt: skip
    print()
    print(harness.format_table(document["rows"]))
    print()
    print(f"{len(document['rows'])} rows in {elapsed:.1f} s")
    if not args.no_save:
        path = harness.default_results_path(device, suites=suites)
        if args.out:  # a file, or a directory to hold the default-named file
            path = Path(args.out) / path.name if Path(args.out).is_dir() else Path(args.out)
        json_path, csv_path = harness.save_results(document, path)
        print(f"saved {json_path} and {csv_path}")
    if baseline is not None:
        return _report_comparison(document["rows"], baseline, args)
    return 0


def cmd_bench_report(args, parser: argparse.ArgumentParser) -> int:
    """``bigkern bench report [--write README.md]``: tables from the newest results per device and suite."""
    from bigkern.bench import harness, report

    if len(args.suites) > 1:
        parser.error("bench report takes no files: it reads the newest results in benchmarks/results/")
    text = report.render(harness.results_dir(), environment.source_root())
    if args.write:
        try:
            report.write_into(Path(args.write), text)
        except (OSError, ValueError) as exc:
            print(str(exc), file=sys.stderr)
            return 1
        print(f"updated the generated tables in {args.write}")
    else:
        print(text, end="")
    return 0


def cmd_bench_plot(args, parser: argparse.ArgumentParser) -> int:
    """``bigkern bench plot FILE... [--out DIR]``: figures from stored results."""
    from bigkern.bench import plot

    files = args.suites[1:]
    if not files:
        parser.error("bench plot: give one or more results JSON files")
    try:
        written = plot.plot_files(files, args.out)
    except (ValueError, RuntimeError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    for png in written:
        print(f"wrote {png}")
    if not written:
        print("nothing to plot: the files have no bigkern speedups, attention rates or roofline data", file=sys.stderr)
        return 1
    return 0


def cmd_tune(args, parser: argparse.ArgumentParser) -> int:
    from bigkern import tuning

    if args.show or args.clear:
        if args.ops:
            parser.error("--show and --clear take no OP")
        if args.clear:
            print(f"deleted {tuning.cache_path()}" if tuning.clear() else f"no cache at {tuning.cache_path()}")
            return 0
        cache = tuning.load()
        print(f"{tuning.cache_path()}:")
        if not cache:
            print("  (empty: bigkern tune has not stored anything)")
        for device, ops in cache.items():
            print(f"  {device}")
            for op, entry in ops.items():
                print(f"    {op}: auto tries {' then '.join(entry['preference'])} ({len(entry['measurements'])} measurements)")
        return 0
    unknown = [op for op in args.ops if op not in tuning.SUITE_OF and op != "all"]
    if not args.ops or unknown:
        parser.error(f"give ops to tune: {', '.join(tuning.SUITE_OF)} or all" + (f" (unknown: {unknown[0]!r})" if unknown else ""))
    if not torch.cuda.is_available():
        print("bigkern tune: tuning times kernels on the GPU that will run them, and no CUDA GPU is visible here "
              "(torch.cuda.is_available() is False); nothing was tuned. `bigkern tune --show` and `--clear` work "
              "without one.", file=sys.stderr)  # fmt: skip
        return 1
    ops = list(tuning.SUITE_OF) if "all" in args.ops else list(dict.fromkeys(args.ops))
    for op in ops:
        tuning.tune(op, torch.device(args.device), quick=args.quick)
    return 0


def cmd_profile(args) -> int:
    from bigkern import profiling

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bigkern profile: --device {device} but no CUDA device is visible", file=sys.stderr)
        return 1
    with bigkern.use_backend(args.backend):
        profiling.profile(args.target, device, steps=args.steps, warmup=args.warmup, batch=args.batch_size,
                          inference=args.inference, nvtx=args.nvtx, trace=Path(args.trace) if args.trace else None,
                          top=args.top)  # fmt: skip
    return 0


def _report_comparison(rows: list[dict], baseline: list[dict], args) -> int:
    """Print the change against the stored run; 1 when a bigkern row regressed past the threshold."""
    from bigkern.bench import compare

    changes, unmatched = compare.compare(rows, baseline)
    print()
    print(f"compared with {args.compare} (change of the median; positive is slower):")
    print(compare.format_changes(changes, unmatched, args.fail_on_regression))
    if args.fail_on_regression is None:
        return 0
    regressed = compare.regressions(changes, args.fail_on_regression)
    if regressed:
        print(f"{len(regressed)} bigkern row{'s' * (len(regressed) != 1)} slower by more than "
              f"{args.fail_on_regression:g}%: failing", file=sys.stderr)  # fmt: skip
        return 1
    print(f"no bigkern row is slower by more than {args.fail_on_regression:g}%")
    return 0


# ---------------------------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bigkern",
        description="bigkern: CUDA C++ and Triton kernels for PyTorch. Report the installation, run benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"bigkern {bigkern.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser("info", help="versions, build facts, devices and which backends serve each op",
                          description="Versions, what bigkern._C was built with, the visible devices, the backend "
                                      "setting, and which backends can serve each op on each device.")  # fmt: skip
    info.add_argument("--json", action="store_true", help="print the report as JSON")

    bench = sub.add_parser(
        "bench", help="run benchmark suites and save the results",
        description="Run benchmark suites against torch (and torch.compile), print a table and save "
                    "JSON + CSV results (default benchmarks/results/<device>-<date>.json).",
    )  # fmt: skip
    # No `choices=` here: argparse checks the empty list of nargs="*" against them and fails.
    bench.add_argument("suites", nargs="*", metavar="SUITE",
                       help=f"suites to run: {', '.join(SUITES)} or all (default all); or `plot FILE...` to draw "
                            "PNG figures from results files (into --out DIR, default next to each file); or "
                            "`report` for markdown tables of the newest results per device and suite")  # fmt: skip
    bench.set_defaults(subparser=bench)
    bench.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    bench.add_argument("--dtype", help="comma-separated dtypes, e.g. float32,float16,bfloat16 "
                                       "(default: float32 on cpu; float32,float16,bfloat16 on cuda)")  # fmt: skip
    bench.add_argument("--quick", action="store_true", help="small shapes and short measurements")
    bench.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="include torch.compile (default: on for a full cuda run, off otherwise)")  # fmt: skip
    bench.add_argument("--filter", action="append", metavar="TEXT",
                       help="keep cases whose name contains TEXT, e.g. 'max_pool2d(3' or '56x56' "
                            "(repeat to require several)")  # fmt: skip
    bench.add_argument("--direction", action="append", choices=["forward", "forward+backward"],
                       help="keep only this direction (repeatable)")  # fmt: skip
    bench.add_argument("--layout", action="append", choices=["nchw", "channels_last"],
                       help="keep only this layout (repeatable)")  # fmt: skip
    bench.add_argument("--provider", metavar="NAMES",
                       help="comma-separated providers to run (bigkern-cpu, bigkern-cuda, bigkern-triton, torch, "
                            "torch.compile)")  # fmt: skip
    bench.add_argument("--out", metavar="PATH",
                       help="results JSON file, or a directory for the default-named file (the CSV goes next to it)")
    bench.add_argument("--no-save", action="store_true", help="print the table only")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument("--write", metavar="README", help="with `bench report`: put the tables into this file")
    bench.add_argument("--shapes", metavar="FILE",
                       help="JSON file of shapes per suite to run instead of the suites' own (see bigkern/bench/shapes.py)")
    bench.add_argument("--compare", metavar="FILE", help="print each row's change against a stored results JSON file")
    bench.add_argument("--fail-on-regression", metavar="PCT", type=float,
                       help="with --compare: exit 1 when a bigkern row's median is more than PCT%% slower")  # fmt: skip

    from bigkern.training import DEFAULTS

    train = sub.add_parser(
        "train", help="train a bundled model on offline data",
        description="Train a bigkern.models model on data that ships offline: cnn and lenet on scikit-learn's digits "
                    "(28x28), lstm/gru/rnn and transformer-lm as character models of Shakespeare's plays (or "
                    "--data), seq2seq on sequence reversal, autoencoder on the digits. Prints per-epoch metrics "
                    "and a summary with samples/s; --backend torch trains the same network in plain torch.nn.",
    )  # fmt: skip
    train.add_argument("task", choices=list(DEFAULTS))
    train.add_argument("--epochs", type=int, help="default: per task (bigkern/training/tasks.py)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--optimizer", choices=["sgd", "adam"])
    train.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    train.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda", "triton", "torch"],
                       help="bigkern backend, or torch: the same model in plain torch.nn layers")  # fmt: skip
    train.add_argument("--amp", choices=sorted(["bf16", "fp16"]), help="torch.autocast dtype")
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save", metavar="FILE", help="write a checkpoint (model, optimizer, epoch) at the end")
    train.add_argument("--load", metavar="FILE", help="resume from a checkpoint; with --epochs 0 only evaluate")
    train.add_argument("--data", metavar="PATH", help="a text file for the character models (default: Shakespeare)")
    train.add_argument("--seq-len", type=int, default=128, help="characters per training sequence")
    train.add_argument("--max-chars", type=int, default=1_000_000, help="use the first N characters of the text (0: all)")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    from bigkern import profiling, tuning

    tune = sub.add_parser(
        "tune", help="measure the GPU backends per op on this GPU and store the faster for auto",
        description="Time each op's benchmark cases with bigkern's cuda and triton backends on the current GPU and "
                    "store the faster (per GPU and torch/Triton/bigkern versions) in a cache that backend 'auto' "
                    f"reads. Needs a CUDA GPU; --show and --clear work anywhere. Cache: {tuning.cache_path()}",
    )  # fmt: skip
    tune.add_argument("ops", nargs="*", metavar="OP", help=f"ops to tune: {', '.join(tuning.SUITE_OF)} or all")
    tune.add_argument("--quick", action="store_true", help="the suites' quick cases only")
    tune.add_argument("--device", default="cuda", help="cuda or cuda:N")
    tune.add_argument("--show", action="store_true", help="print the cache")
    tune.add_argument("--clear", action="store_true", help="delete the cache")
    tune.set_defaults(subparser=tune)

    prof = sub.add_parser(
        "profile", help="profile a bigkern model or op with torch.profiler",
        description="Run torch.profiler (CPU, and CUDA on a GPU) over a few steps of a bigkern.models model "
                    "(a training step on synthetic inputs) or one op, write a Chrome trace and print the top "
                    "operators by self time. bigkern's ops appear as bigkern::<op>.",
    )  # fmt: skip
    prof.add_argument("target", choices=profiling.targets())
    prof.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    prof.add_argument("--steps", type=int, default=5)
    prof.add_argument("--warmup", type=int, default=2)
    prof.add_argument("--batch-size", type=int)
    prof.add_argument("--inference", action="store_true", help="no-grad forward passes instead of training steps")
    prof.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda", "triton", "torch"])
    prof.add_argument("--nvtx", action="store_true", help="also emit NVTX ranges (run under nsys or ncu)")
    prof.add_argument("--trace", metavar="FILE", help="Chrome trace path (default profile-<target>-<device>-<time>.json)")
    prof.add_argument("--top", type=int, default=15, help="operators to list")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on a usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["bigkern", *(sys.argv[1:] if argv is None else argv)])
    try:
        if args.command == "info":
            return cmd_info(args)
        if args.command == "train":
            from bigkern.training import run

            run(args)
            return 0
        if args.command == "profile":
            return cmd_profile(args)
        if args.command == "tune":
            return cmd_tune(args, args.subparser)
        return cmd_bench(args, args.subparser)
    except BrokenPipeError:  # e.g. `bigkern info | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
