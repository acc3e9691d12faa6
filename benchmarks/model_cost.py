"""Size and cost of every recipe's default network -> benchmarks/results/model_cost.json.

    python -m benchmarks.model_cost

Parameters, and multiply-accumulates for one 5-s window as the edge feeds it (counted by
torch.utils.flop_counter: a MAC is two FLOPs), of the networks the training commands build by default.
Untrained weights cost the same as trained ones.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from edge.atomic import write_json
from edge.frontend import FrontEnd
from train import audionet, melcnn
from train.models import build_model

RESULT = Path(__file__).resolve().parent / "results" / "model_cost.json"


def recipes() -> dict:
    """name -> (model name, keyword arguments, shape of one window's input)."""
    return {
        "audionet": ("audionet", {"depth": audionet.DEPTH, "sample_rate": audionet.INPUT_RATE,
                                  "pooling": audionet.POOLING},
                     (1, int(audionet.INPUT_RATE * audionet.CLIP_SECONDS))),
        "melcnn": ("melcnn", {}, melcnn.FRONTEND.image_shape),
        "resnet50": ("resnet50", {"weights": None}, FrontEnd().image_shape),
    }


def cost(model: torch.nn.Module, input_shape: tuple) -> dict:
    """Parameters and MACs of one window (batch of one) through ``model`` in eval mode."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_shape))
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "macs_per_window": counter.get_total_flops() // 2, "input_shape": list(input_shape)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    result = {"command": "python -m benchmarks.model_cost", "torch": torch.__version__,
              "statistic": "parameters; multiply-accumulates for one 5-s window (FLOPs / 2)", "models": {}}
    for name, (model_name, kwargs, shape) in recipes().items():
        model = build_model(model_name, n_classes=50, **kwargs)
        result["models"][name] = {"model_kwargs": kwargs, **cost(model, shape)}
        print(f"{name}: {result['models'][name]['parameters'] / 1e6:.2f} M parameters, "
              f"{result['models'][name]['macs_per_window'] / 1e9:.3f} G MACs per window")
    write_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
