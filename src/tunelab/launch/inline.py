"""`accelerate launch` for one process, in the recipe's own process: ``python -m tunelab.launch.inline
<accelerate launch arguments>``.

For one process accelerate's launcher starts a second interpreter (its "simple launcher") that runs the
recipe with a few environment variables it computes; the launcher's own interpreter and imports cost
2-3 s of every run. Here accelerate's own functions parse and check the same arguments and compute the
same environment, and the recipe then runs in this process. Whatever accelerate would start with another
launcher (several processes, an `accelerate config` file asking for FSDP or DeepSpeed, ...) is handed to
accelerate's launcher unchanged.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path


def prepare(argv: list[str]) -> tuple[str, list[str], dict[str, str]] | None:
    """(script, its arguments, its whole environment) as accelerate's simple launcher would start it for
    these `accelerate launch` arguments; None when accelerate would take another launcher."""
    from accelerate.commands.config.config_args import ComputeEnvironment
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if not args.cpu and (
        args.use_deepspeed or args.use_fsdp or args.use_megatron_lm or args.multi_gpu or args.tpu
    ):
        return None
    if defaults is not None and defaults.compute_environment == ComputeEnvironment.AMAZON_SAGEMAKER:
        return None
    cmd, env = prepare_simple_launcher_cmd_env(args)  # [python, script, *script args], os.environ + its own
    return cmd[1], cmd[2:], env


def main(argv: list[str]) -> None:
    prepared = prepare(argv)
    if prepared is None:
        from accelerate.commands.launch import launch_command, launch_command_parser

        launch_command(launch_command_parser().parse_args(argv))
        return
    script, args, env = prepared
    os.environ.update(env)
    import torch

    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))  # OpenMP read OMP_NUM_THREADS when torch loaded
    sys.argv = [script, *args]
    sys.path[0] = str(Path(script).resolve().parent)  # as `python script.py` sets it
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
