"""The ``fetch``, ``check``, ``evaluate``, ``compare`` and ``export`` commands."""

from __future__ import annotations

import json
from pathlib import Path

from isbi_unet.errors import UserError


def cmd_fetch(args) -> int:
    from isbi_unet.io.fetch import fetch_isbi

    fetch_isbi(args.source, args.dest, verify=not args.no_verify, progress=not args.quiet)
    return 0


def cmd_evaluate(args) -> dict:
    from isbi_unet.evaluation.folders import (
        evaluate_folders,
        evaluate_segmentation_folders,
    )
    from isbi_unet.io.stacks import is_tiff_file

    if args.segmentation:
        scores = evaluate_segmentation_folders(args.segmentation, args.labels, names=args.names,
                                               json_path=args.json, progress=not args.quiet,
                                               mask_foreground=args.mask_foreground)
        print(f"V_rand {scores['v_rand']:.4f}  V_info {scores['v_info']:.4f}  "
              f"({len(scores['per_slice'])} slices, label images as they are)")
    elif is_tiff_file(args.pred):
        from isbi_unet.evaluation.stacks import evaluate_stacks

        scores = evaluate_stacks(args.pred, args.labels, names=args.names, json_path=args.json,
                                 progress=not args.quiet, mask_foreground=args.mask_foreground)
        print_scores(scores)
    else:
        scores = evaluate_folders(args.pred, args.labels, names=args.names, json_path=args.json,
                                  progress=not args.quiet, mask_foreground=args.mask_foreground)
        print_scores(scores)
    print_score_parts(scores)
    return scores


def cmd_check(args) -> object:
    from isbi_unet.io.check import check_dataset
    from isbi_unet.io.stack_pairs import pages_of_stacks

    report = check_dataset(pages_of_stacks(args.data), num_class=args.num_class, progress=not args.quiet,
                           mask_foreground=args.mask_foreground)
    print(report.summary())
    if report.problems:
        raise UserError(f"{args.data}: {len(report.problems)} problem(s) listed above; fix them before training")
    return report


def print_scores(scores: dict) -> None:
    print(f"V_rand {scores['v_rand']:.4f} (threshold {scores['v_rand_threshold']:.1f})  "
          f"V_info {scores['v_info']:.4f} (threshold {scores['v_info_threshold']:.1f})  "
          f"pixel error {scores['pixel_error']:.4f}  Dice {scores['dice']:.4f}  "
          f"({len(scores['per_slice'])} slices)")


def print_score_parts(scores: dict) -> None:
    """The split and merge parts (isbi_slice_scores.foreground_restricted_parts); lower score = more errors."""
    def fmt(key: str) -> str:
        return "nan" if scores[key] is None else f"{scores[key]:.4f}"

    print(f"  splits: V_rand_split {fmt('v_rand_split')}  V_info_split {fmt('v_info_split')}  "
          f"H(S|T) {fmt('h_seg_given_gt')} nats")
    print(f"  merges: V_rand_merge {fmt('v_rand_merge')}  V_info_merge {fmt('v_info_merge')}  "
          f"H(T|S) {fmt('h_gt_given_seg')} nats")


def cmd_compare(args) -> list:
    """Print a table of finished runs (and mean +- sd), optionally plot and save them."""
    import dataclasses

    from isbi_unet.evaluation.runs import comparison_table, summarize_run

    for path in (args.plot, args.json):
        if path and Path(path).is_dir():
            raise UserError(f"{path}: is a folder; give a file name")
    summaries = [summarize_run(run_dir, target=args.target) for run_dir in args.runs]
    names = [run.name for run in summaries]
    if len(set(names)) < len(names):  # e.g. crossval's fold1 of two experiments: use the paths
        for run, path in zip(summaries, args.runs):
            run.name = str(path)
    if args.plot and not all(run.history.get("minutes") and run.history.get("val_v_rand") for run in summaries):
        raise UserError("--plot needs per-epoch val_v_rand and minutes in every run's history.csv")
    print(comparison_table(summaries, target=args.target))
    if args.plot:
        from isbi_unet.evaluation.plots import plot_runs_time_to_quality

        plot_runs_time_to_quality({run.name: run.history for run in summaries}, args.plot,
                                  target=args.target, ymin=args.ymin)
        print(f"Wrote {args.plot}")
    if args.json:
        fields = [{key: value for key, value in dataclasses.asdict(run).items() if key != "history"}
                  for run in summaries]
        from isbi_unet.io.images import write_text

        write_text(args.json, json.dumps(fields, indent=2))
    return summaries


def cmd_export(args) -> dict:
    """Write the model as ONNX, TF SavedModel and a bioimage.io package into a new folder."""
    from isbi_unet.export.formats import export_model

    sample, source = None, ""
    if args.sample:
        import numpy as np

        from isbi_unet.io.images import read_image

        sample, source = read_image(args.sample).round().astype(np.uint8), Path(args.sample).name
    written = export_model(args.model, args.out, formats=args.formats, sample=sample,
                           sample_source=source, progress=not args.quiet)
    for fmt, path in written.items():
        print(f"{fmt}: {path}")
    return written
