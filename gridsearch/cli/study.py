"""The study's commands: ``report``, ``evaluate``, ``inspect``, ``export`` and ``serve``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from gridsearch.cli.output import format_table, percent_columns
from gridsearch.errors import UserError
from gridsearch.store.connection import artifacts_dir
from gridsearch.store.storage import Storage

if TYPE_CHECKING:
    from gridsearch.store.models import TrialRow


def cmd_report(args: argparse.Namespace) -> int:
    from gridsearch.analysis.report import build_report
    from gridsearch.training.data import default_data_dir

    out = args.out or Path("reports") / ("_".join(args.sweeps) if args.sweeps else "all")
    with Storage(args.db, readonly=True) as storage:
        report = build_report(
            storage, args.sweeps, out, artifacts_dir(args.db, args.artifacts), args.data_dir or default_data_dir()
        )
    print(f"report written to {report.index}")
    if report.without_images:
        print(f"warning: {report.without_images}", file=sys.stderr)
    elif report.left_out:
        missing = "; ".join(report.left_out)
        print(f"warning: ROC AUC and confidences left out of the report: {missing}", file=sys.stderr)
    if report.unreported:
        print(f"warning: not in the report: {'; '.join(report.unreported)}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    with Storage(args.db) as storage:  # closed on the way out: what it wrote leaves the -wal file
        if args.front:
            return _evaluate_front(storage, args)
        return _evaluate_committee(storage, args) if args.suite is None else _evaluate_suite(storage, args)


def _evaluate_front(storage: Storage, args: argparse.Namespace) -> int:
    from gridsearch.analysis.fronts import test_front
    from gridsearch.training.data import default_data_dir

    if args.sweep is None:
        raise UserError("--front needs a SWEEP (its front is tested), not --trial")
    front, tested = test_front(
        storage, args.sweep, artifacts_dir(args.db, args.artifacts), args.data_dir or default_data_dir()
    )
    timed = [column for column in ("epoch_seconds", "inference_ms") if column in front]
    front[timed] = front[timed].map(lambda value: float(f"{value:.4g}"))
    print(format_table(percent_columns(front), "table"))
    selected = storage.sweep(args.sweep).selected_trial
    print(f"{len(front)} front members of {args.sweep}, {tested} trial(s) tested now; still selected: {selected}")
    return 0


def _trial(storage: Storage, key: str) -> TrialRow:
    """The trial ``key`` names in full or by a prefix of it (the short keys ``status`` and ``trials`` print)."""
    found = storage.trial(key)
    if found is not None:
        return found
    matches = storage.trials_starting(key) if key else []
    if len(matches) != 1:
        problem = "no trial" if not matches else "more than one trial"
        raise UserError(f"{problem} with key {key!r} in {storage.location}")
    return matches[0]


def _evaluate_suite(storage: Storage, args: argparse.Namespace) -> int:
    import torch

    from gridsearch.analysis import robustness
    from gridsearch.analysis.trained_models import bf16, load_model, selected_trial
    from gridsearch.spec.datasets import described
    from gridsearch.training import predict
    from gridsearch.training.data import arrays_dir, default_data_dir, prepare, test_split
    from gridsearch.vocabulary import TrialStatus

    trial = selected_trial(storage, args.sweep) if args.sweep else _trial(storage, args.trial)
    if trial.status != TrialStatus.DONE:
        raise UserError(f"trial {trial.key} is {trial.status}, not done: nothing to evaluate")
    model = load_model(trial, artifacts_dir(args.db, args.artifacts))
    data_dir = args.data_dir or default_data_dir()
    dataset = described(trial.config["dataset"])
    prepare(data_dir, dataset)
    test = test_split(data_dir, args.test_size, dataset)
    usps = robustness.usps_folder(args.usps)
    if bf16(trial) and predict.bf16_emulated(torch.device("cpu")):
        print(
            f"note: trial {trial.key} runs in bfloat16, as its test evaluation did; oneDNN cannot run "
            "bfloat16 on this CPU (no AVX-512), so it is emulated, 6-8x slower than float32 (minutes, not seconds)"
        )
    results = robustness.run_suite(
        model, bf16(trial), test.images, test.labels, usps, dataset.digits, arrays_dir(data_dir, dataset), dataset.name
    )
    for name, result in results.items():
        storage.save_evaluation(trial.key, name, result)
    table = pd.DataFrame(
        [
            {
                "evaluation": name,
                "samples": r["samples"],
                "accuracy": r["accuracy"],
                "errors": r["errors"],
                "seconds": round(r["seconds"], 2),
            }
            for name, r in results.items()
        ]
    )
    print(format_table(percent_columns(table), "table"))
    if not dataset.digits:
        print(f"usps and sklearn_digits skipped: trial {trial.key} trained on {dataset.title}, not handwritten digits")
    elif robustness.USPS_NAME not in results:
        print(f"usps skipped: no usps.h5 in {usps} (pass --usps or set GRIDSEARCH_USPS)")
    elapsed = sum(result["seconds"] for result in results.values())
    print(f"trial {trial.key}: {len(results)} evaluations stored ({elapsed:.1f} s of evaluation)")
    return 0


def _evaluate_committee(storage: Storage, args: argparse.Namespace) -> int:
    from gridsearch.analysis.committee import build_committee
    from gridsearch.training.data import default_data_dir
    from gridsearch.vocabulary import format_percent

    if args.sweep is None:
        raise UserError("--ensemble needs a SWEEP (its best trials form the committee), not --trial")
    data_dir = args.data_dir or default_data_dir()
    size = None if args.ensemble == "auto" else args.ensemble
    committee = build_committee(storage, args.sweep, size, artifacts_dir(args.db, args.artifacts), data_dir)
    if size is None:
        tried = ", ".join(f"k={k} {format_percent(a)}" for k, a in committee.val_accuracies.items())
        print(f"val accuracy by committee size: {tried}; chosen k={len(committee.members)}")
    test = committee.test
    storage.save_evaluation(committee.members[0], committee.name, test)
    print(
        f"{committee.name} of {args.sweep} ({', '.join(committee.members)}): test accuracy "
        f"{format_percent(test['accuracy'])}, {test['errors']} errors in {test['samples']:,}; "
        f"stored as evaluation {committee.name} of trial {committee.members[0]}"
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from gridsearch.analysis.inspection import write_inspection
    from gridsearch.training.data import default_data_dir, prepare

    data_dir = args.data_dir or default_data_dir()
    prepare(data_dir, args.dataset)
    out = args.out or Path("reports") / f"inspect-{args.dataset}"
    print(f"inspection written to {write_inspection(out, data_dir, args.dataset)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gridsearch.analysis.mlflow_export import export_to_mlflow

    with Storage(args.db, readonly=True) as storage:
        if args.to == "tensorboard":
            from gridsearch.engine.tensorboard import export_trained

            written = export_trained(storage, args.sweep, args.logdir)
            print(f"sweep {args.sweep} -> TensorBoard logs of {written} trials under {args.logdir / args.sweep}")
            return 0
        done = export_to_mlflow(storage, args.sweep, args.tracking_uri, args.experiment)
    print(
        f"sweep {args.sweep} -> MLflow experiment {done.experiment!r} (id {done.experiment_id}) at "
        f"{done.tracking_uri}: {len(done.logged)} runs logged, {len(done.replaced)} replaced, "
        f"{len(done.unchanged)} unchanged"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gridsearch.web.app import serve

    with Storage(args.db, readonly=True) as storage:
        try:
            serve(storage, artifacts_dir(args.db, args.artifacts), args.host, args.port)
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
    return 0
