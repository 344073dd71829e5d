"""The ``predict`` and ``segment`` commands: membrane maps, cells, and the cell parameters' file."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from isbi_unet.errors import UserError


def cmd_predict(args) -> list:
    from isbi_unet.io.stacks import is_tiff_file
    from isbi_unet.network import load_model
    from isbi_unet.prediction.engines import (
        cached_onnx,
        onnx_predict_fn,
        resolve_engine,
        resolve_precision,
    )
    from isbi_unet.prediction.predict import affinity_offsets, predict_folder

    if args.params and not args.instances:
        raise UserError("--params needs --instances METHOD")
    if args.isbi_submission and args.output:
        raise UserError("give either --output or --isbi-submission, not both")
    if args.isbi_submission and not is_tiff_file(args.isbi_submission):
        raise UserError(f"--isbi-submission {args.isbi_submission}: give a .tif file name")
    stack_output = args.isbi_submission or (args.output if args.output and is_tiff_file(args.output) else None)
    if is_tiff_file(args.input) and not stack_output:
        if args.output:
            raise UserError(f"--output {args.output}: the predictions of a TIFF stack go to a stack; give a .tif file name")
        stack_output = str(Path(args.input).with_name(Path(args.input).stem + "_predict.tif"))
    params = instance_parameters(args.instances, args.params or _params_beside(args), {}) if args.instances else None
    predict_fn = None
    if resolve_engine(args.engine) == "onnx":
        # Before the model is loaded here: the export runs in a child process, and this
        # process should not hold a second copy meanwhile.
        try:
            predict_fn = onnx_predict_fn(cached_onnx(args.model))
        except UserError:
            if args.engine == "onnx":
                raise  # auto: Keras when the ONNX file cannot be written beside the model
    network = load_model(args.model, precision=resolve_precision(args.engine, args.precision))
    if args.instances and network.output_shape[-1] != 1:
        raise UserError("--instances needs a model with one output channel (cell probability), not --num-class > 1")
    if args.pixel_size is not None:
        predict_fn = _at_pixel_size(network, predict_fn, args.pixel_size, args.mode)
    if stack_output:
        from isbi_unet.prediction.streaming import predict_to_stack

        predict_to_stack(network, args.input, stack_output, mode=args.mode, tta=args.tta,
                         progress=not args.quiet, isbi_submission=bool(args.isbi_submission),
                         predict_fn=predict_fn)
        print(f"Wrote the prediction stack {stack_output}")
        if args.instances:
            _segment(stack_output, cells_folder_for_stack(stack_output), args, params)
        return [Path(stack_output)]
    # default: a new folder beside the input, so that no file of the input folder is replaced
    output = args.output or str(Path(args.input).parent / f"{Path(args.input).name}_predictions")
    picture = None
    offsets = affinity_offsets(network)
    if offsets is not None:
        from isbi_unet.cells.mutex_watershed import segments_mask

        picture = functools.partial(segments_mask, offsets=offsets, short_bias=args.mws_short_bias,
                                    long_bias=args.mws_long_bias, long_stride=args.mws_stride,
                                    min_size=args.mws_min_size)
    written = predict_folder(network, args.input, output, mode=args.mode, tta=args.tta,
                             progress=not args.quiet, picture=picture, predict_fn=predict_fn)
    print(f"Wrote {len(written)} predictions to {output}")
    if args.instances:
        _segment(output, output, args, params, names=[Path(path).stem.removesuffix("_predict") for path in written])
    return written


def _params_beside(args) -> str | None:
    """For a learned ``--instances`` method without ``--params``: the ``instance_parameters.json``
    of the model's run (beside ``--model``), whose edge model was fitted on this network's maps."""
    from isbi_unet.cells.parameters import LEARNED_METHODS

    beside = Path(args.model).with_name("instance_parameters.json")
    if args.instances not in LEARNED_METHODS or not beside.is_file():
        return None
    try:
        if json.loads(beside.read_text(encoding="utf-8")).get("method") != args.instances:
            return None  # the run chose another method: its file is not this one's
    except (OSError, ValueError, AttributeError):
        return None
    print(f"{args.instances}: the edge model and parameters of the model's run, {beside}")
    return str(beside)


def cells_folder_for_stack(stack: str | Path) -> Path:
    """Where ``predict --instances`` writes the cells of a prediction stack: ``STACK_cells/`` beside it."""
    stack = Path(stack)
    return stack.with_name(stack.stem + "_cells")


def _segment(maps: str | Path, output: str | Path, args, params: dict, names: list[str] | None = None) -> None:
    """``predict --instances``: the cells of the maps just written (a folder, or a stack whose
    pages are named 0, 1, ...), over the input images."""
    from isbi_unet.cells.folders import segment_folder

    cells = segment_folder(maps, output, args.instances, params, images_dir=args.input, names=names,
                           progress=not args.quiet, pixel_size_nm=args.pixel_size)
    print(f"Wrote {len(cells.paths)} label images ({cells.method}) and cells.csv to {output}")


def _at_pixel_size(network, predict_fn, pixel_size: float, mode: str):
    """The network's predict function for images of ``pixel_size`` nm (see isbi_unet.prediction.pixel_size)."""
    from isbi_unet.network import downsampling_factor
    from isbi_unet.prediction.pixel_size import at_pixel_size
    from isbi_unet.prediction.predict import affinity_offsets, fixed_input_size, model_predict_fn

    if affinity_offsets(network) is not None:
        raise UserError("--pixel-size: an affinity model's offsets are pixels of its own size; predict at its pixel size")
    if fixed_input_size(network) is not None or mode == "resize":
        raise UserError("--pixel-size resamples the images itself; it does not go with a fixed-size model or --mode resize")
    return at_pixel_size(predict_fn or model_predict_fn(network), pixel_size, downsampling_factor(network))


def instance_parameters(method: str, params_file: str | None, overrides: dict, fitting: bool = False) -> dict:
    """The method's parameters: defaults, then the JSON file, then the command-line options.
    A learned method needs its edge model from the file unless it is ``fitting`` one."""
    from isbi_unet.cells import parameters as cell_parameters
    from isbi_unet.cells.methods import require_edge_model

    params: dict = {}
    if params_file:
        try:
            params = cell_parameters.load_parameters(params_file, method)
        except (OSError, ValueError) as exc:
            raise UserError(f"--params {params_file}: {exc}") from exc
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        checked = cell_parameters.check_parameters(method, {**params, **given})
        if not fitting:
            require_edge_model(method, checked)
        return checked
    except ValueError as exc:
        raise UserError(f"{exc}: see segment --help") from exc


def cmd_segment(args) -> list:
    from isbi_unet.cells import parameters as cell_parameters
    from isbi_unet.cells.calibration import MEMBRANE_SHARE
    from isbi_unet.cells.folders import segment_folder

    overrides = {key: getattr(args, key) for key in ("threshold", "sigma", "min_distance", "beta", "bias", "membrane_fraction",
                                                    "min_size", "faint_boundary", "enclosed_boundary")}
    fitting = args.fit_maps is not None
    if fitting != (args.fit_labels is not None):
        raise UserError("--fit-maps and --fit-labels go together")
    if fitting and args.method not in cell_parameters.LEARNED_METHODS:
        raise UserError(f"--fit-maps fits the edge model of {', '.join(cell_parameters.LEARNED_METHODS)}; "
                        f"--method {args.method} has none")
    if fitting and args.params:
        raise UserError("give either --params (a fitted edge model) or --fit-maps/--fit-labels, not both")
    params = instance_parameters(args.method, args.params, overrides, fitting=fitting)
    if fitting:
        from isbi_unet.cells.folders import fit_edge_model_on_folders

        params = {**params, "edge_model": fit_edge_model_on_folders(args.fit_maps, args.fit_labels, params,
                                                                     progress=not args.quiet)}
    cells = segment_folder(args.pred, args.output, args.method, params, images_dir=args.images,
                           progress=not args.quiet, membrane_share=args.membrane_share or MEMBRANE_SHARE,
                           pixel_size_nm=args.pixel_size)
    if fitting:
        cell_parameters.save_parameters({"method": args.method, "parameters": params},
                                Path(args.output) / "instance_parameters.json")
    print(f"Wrote {len(cells.paths)} label images ({cells.method}, {cell_parameters.describe_parameters(cells.parameters)}) "
          f"and cells.csv to {args.output}" + (" with the fitted parameters in instance_parameters.json" if fitting else ""))
    return cells.paths
