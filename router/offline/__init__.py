"""Offline routing work: read labelled outcome tables, profile experts on labelled questions, and evaluate routers.

Runs in: the CLI (``moesaic profile``, ``eval-router``), the server's routing-evaluation worker, benchmarks; never on
a request's path. May import: the live router (``router``), ``aggregator`` (extractors and votes), ``experts.types``.

Public surface (below; the modules are private): outcome files (``_outcomes``), labelled questions and profiling runs
(``_dataset``), the evaluation (``_evaluate``), the cost frontier (``_frontier``), RouteLLM's quality metrics
(``_quality_metrics``).
"""

from router.offline._dataset import load_dataset, read_results, results_table, run_profiling
from router.offline._evaluate import EvalOptions, evaluate, evaluate_pairs, json_figures, split_tables
from router.offline._frontier import DEFAULT_BUDGETS
from router.offline._outcomes import OutcomeFileError, TableLimits, TableTooLarge, load_outcomes, read_outcomes

__all__ = [
    "DEFAULT_BUDGETS",
    "EvalOptions",
    "OutcomeFileError",
    "TableLimits",
    "TableTooLarge",
    "evaluate",
    "evaluate_pairs",
    "json_figures",
    "load_dataset",
    "load_outcomes",
    "read_outcomes",
    "read_results",
    "results_table",
    "run_profiling",
    "split_tables",
]
