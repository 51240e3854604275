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


def main(argv: list[str]) -> None:
    from accelerate.commands.config.config_args import ComputeEnvironment
    from accelerate.commands.launch import _validate_launch_command, launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    parser = launch_command_parser()
    args, defaults, _ = _validate_launch_command(parser.parse_args(argv))
    other_launcher = not args.cpu and (
        args.use_deepspeed or args.use_fsdp or args.use_megatron_lm or args.multi_gpu or args.tpu
    )
    if other_launcher or (
        defaults is not None and defaults.compute_environment == ComputeEnvironment.AMAZON_SAGEMAKER
    ):
        launch_command(parser.parse_args(argv))
        return
    cmd, env = prepare_simple_launcher_cmd_env(args)  # [python, script, *script args], the full environment
    os.environ.update(env)
    import torch

    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))  # OpenMP read OMP_NUM_THREADS when torch loaded
    script = cmd[1]
    sys.argv = cmd[1:]
    sys.path[0] = str(Path(script).resolve().parent)  # as `python script.py` sets it
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
