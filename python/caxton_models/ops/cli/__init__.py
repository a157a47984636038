"""The ``caxton`` command line: the spec's operator interface.

Exit codes (also in ``caxton --help``):

  0    success
  1    the operation failed (one line on stderr: what, where, what to do)
  2    bad usage
  3    verification found problems (``caxton model verify``, ``caxton health``)
  4    the model is unknown or not installed
  5    the network is needed but not allowed (offline) or not reachable
  130  interrupted (Ctrl-C); downloads keep their resumable parts

Heavy modules (ONNX Runtime, aiohttp, numpy) are imported inside the
commands that need them, so ``caxton --help`` and ``caxton model list`` start
fast.
"""

from caxton_models.ops.cli._main import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
