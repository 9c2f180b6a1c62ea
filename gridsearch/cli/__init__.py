"""The ``gridsearch`` command line: run, plan, status, trials, best, query, db, report, evaluate, inspect, export
and serve (one module per group of commands)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from gridsearch.cli.compat import TORCH_COMMANDS, check_torchvision
from gridsearch.cli.parser import build_parser
from gridsearch.cli.results import cmd_best, cmd_db, cmd_query, cmd_status, cmd_trials
from gridsearch.cli.running import cmd_plan, cmd_run
from gridsearch.cli.study import cmd_evaluate, cmd_export, cmd_inspect, cmd_report, cmd_serve
from gridsearch.engine.devices import keep_freed_memory
from gridsearch.errors import Unavailable, UserError
from gridsearch.spec.usercode import code_path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m gridsearch`` and the ``gridsearch`` console script."""
    keep_freed_memory()  # evaluations, reports and the web app run networks in this process
    code_path([Path.cwd()])  # as under ``python -m``: the user's own code in this folder imports (report, serve...)
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # run names itself in its --retry-failed hint
    handler = {
        "run": cmd_run,
        "plan": cmd_plan,
        "status": cmd_status,
        "trials": cmd_trials,
        "best": cmd_best,
        "query": cmd_query,
        "db": cmd_db,
        "report": cmd_report,
        "evaluate": cmd_evaluate,
        "inspect": cmd_inspect,
        "serve": cmd_serve,
        "export": cmd_export,
    }[args.command]
    try:
        if args.command in TORCH_COMMANDS:
            check_torchvision()
        return handler(args)
    except UserError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # always one line
        return 2
    except Unavailable as exc:  # the database or artifacts folder went away; what is stored is resumable
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `gridsearch trials x | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
