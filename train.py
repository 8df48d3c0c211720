"""Train FastGAN: python train.py --data DIR --workdir RUN [--config configs/X.py] [--config.FIELD=VALUE ...]

Without --data the embedded Noto smileys are used. Running again on the same
--workdir resumes from its latest checkpoint.
"""

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fastgan_jax import checkpoints, data, training, weights  # noqa: E402

config_flags.DEFINE_config_file(
    "config", str(pathlib.Path(__file__).resolve().parent / "configs" / "default.py"), "Training config file."
)
flags.DEFINE_string("data", None, "Image folder (searched recursively) or tfds:NAME[:SPLIT]; overrides config.data.")
flags.DEFINE_string("workdir", None, "Run folder: checkpoints, samples, TensorBoard events.", required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    config = flags.FLAGS.config
    if flags.FLAGS.data:
        config.data = flags.FLAGS.data
    try:
        training.train_and_evaluate(config, flags.FLAGS.workdir)
    except (data.DataError, checkpoints.ConfigMismatchError, NotADirectoryError, weights.WeightsNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
