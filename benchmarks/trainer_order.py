"""Does building the Trainer first slow every later train step of the process? (issue 20)

    python benchmarks/trainer_order.py --first trainer|plain [--steps 24]

One fresh process, the paper's binarized-MNIST Diagonal BiLSTM (batch 16, 1 replica, jit off):
`--first plain` times `step_time.py`'s plain train step (3 blocks of 8 steps), then builds a
`Trainer` on random 28x28 binary images (`train_throughput.py`'s data) and runs it for
`--steps` steps, then times the plain step again; `--first trainer` builds and runs the
Trainer before the plain step exists. Prints each block's median wall / CPU ms per step and
the Trainer's logged ms/step, and the minor page faults per plain step. Run the two orders
alternately, several times. On 2026-12-07, with TensorFlow's default CPU allocator, every
`--first trainer` process was about 2x slower than every `--first plain` one, for both steps,
in the same minutes, with ~9x the page faults: malloc handed freed tensors back to the kernel
and faulted them in again. pixelrnn_tf now selects TF's BFC allocator on import
(`TF_CPU_ALLOCATOR_USE_BFC=true`); run with `TF_CPU_ALLOCATOR_USE_BFC=false` to see the old
behaviour.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", choices=("trainer", "plain"), required=True)
    parser.add_argument("--steps", type=int, default=24, help="Trainer steps (24)")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    import train_throughput
    from step_time import CONFIGS, make_train_step

    from pixelrnn_tf import PixelRNN
    from pixelrnn_tf import config as config_lib
    from pixelrnn_tf.trainer import Trainer

    root = tempfile.mkdtemp(prefix="trainer_order_")
    data_dir = train_throughput.make_dataset(root, (28, 28, 1), 2)
    plain = {}

    def plain_blocks(tag, blocks=3, size=8):
        if not plain:
            model = PixelRNN("diagonal_bilstm", **CONFIGS["mnist"])
            plain["images"] = tf.constant(np.random.default_rng(0).integers(
                0, 2, (16, 28, 28, 1)), tf.int32)
            plain["step"] = make_train_step(model, False)
            for _ in range(3):  # trace, then warm up
                plain["step"](plain["images"]).numpy()
        results = []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(blocks):
            wall, cpu = [], []
            for _ in range(size):
                start, start_cpu = time.perf_counter(), time.process_time()
                plain["step"](plain["images"]).numpy()
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            results.append(f"{statistics.median(wall) * 1e3:.0f}/"
                           f"{statistics.median(cpu) * 1e3:.0f}")
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (blocks * size)
        print(f"{time.strftime('%H:%M:%S')} plain step {tag}: wall/CPU ms per step "
              f"{' '.join(results)}; {faults:.0f} page faults per step", flush=True)

    def trainer():
        config = config_lib.apply_overrides(config_lib.get_preset("mnist_diagonal_bilstm"), [
            f"train_steps={args.steps}", f"steps_per_epoch={args.steps}", "log_every_steps=4",
            f"checkpoint_every_steps={args.steps}", "validation_split=",
            "image_every_epochs=0", "progress_bar=false", "cpu_replicas=0", "binarize=false",
            "warmup_steps=0", "jit_compile=off"])
        results = Trainer(config, os.path.join(root, "run"), data_dir).run()
        print(f"{time.strftime('%H:%M:%S')} Trainer.run: "
              f"{16000 / results['train_images_per_second']:.0f} ms/step (logged median)",
              flush=True)

    if args.first == "plain":
        plain_blocks("first")
        trainer()
        plain_blocks("after the Trainer")
    else:
        trainer()
        plain_blocks("after the Trainer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
