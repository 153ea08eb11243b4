"""``rnnlab export``: a trained run's model as a file for use without rnnlab's PyTorch code."""

from __future__ import annotations

import argparse


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained text model as ONNX (one step; sample it without PyTorch)",
        description="Write the run's language model as an ONNX graph of one decoding step "
        "(token ids and state in; log-probabilities over the vocabulary and the new state out; "
        "dynamic batch), with its vocabulary and tokenizer in the file's metadata. Sample it "
        "with python -m rnnlab.onnx_sampler FILE (NumPy and onnxruntime only).",
    )
    p.add_argument("run_dir", help="a run directory (its best checkpoint) or a checkpoint file")
    p.add_argument(
        "--onnx", required=True, metavar="FILE", help="the .onnx file to write (atomically)"
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from rnnlab.export.onnx_file import export_onnx

    print(export_onnx(args.run_dir, args.onnx).summary())
    return 0
