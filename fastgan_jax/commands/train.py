"""Train FastGAN.

    fastgan-train --workdir RUN [--data DIR] [--config NAME|FILE] [--config.GROUP.FIELD=VALUE ...]
    python train.py ...  (the same, from a checkout)

Without --data the embedded Noto smileys are used. Running again on the same
--workdir resumes from its latest checkpoint. --config takes a bundled config
by name (cpu_quick, default, few_shot_1024) or a path to a config file;
every field below can be overridden with --config.GROUP.FIELD=VALUE.
"""

import re
import sys

import jax
from absl import flags, logging
from ml_collections import config_flags

from fastgan_jax import configs, data
from fastgan_jax.commands import launch
from fastgan_jax.interop import convert, weights
from fastgan_jax.train import checkpoints, hosts, runs, safeguards, trainer, workdir
from fastgan_jax.train.validate import ConfigError, check_fields, validate

HELP_ARGS = ("-h", "--help", "-help", "-?", "--helpshort", "-helpshort")
CONFIG_FLAGS = ("--config", "-config")
MISSING_WORKDIR = "--workdir is required: the run's folder for checkpoints, samples and logs (e.g. --workdir runs/mine)"

# No default file here: main() adds --config default when it is not given, so that importing this
# module loads no config (ml_collections loads a default with a deprecated importlib call).
config_flags.DEFINE_config_file("config", None, "Training config: a bundled name or a config file.")
flags.FLAGS["config"].default_as_str = "'default'"  # what main() adds, shown by --help
flags.DEFINE_string("data", None, "Image folder (searched recursively) or tfds:NAME[:SPLIT]: config.data.source.")
flags.DEFINE_string("workdir", None, "Run folder: checkpoints, samples, TensorBoard events (required).")
flags.DEFINE_string("coordinator_address", None, "Several processes (hosts): process 0's HOST:PORT.")
flags.DEFINE_integer("num_processes", None, "Several processes: how many take part.", lower_bound=1)
flags.DEFINE_integer("process_id", None, "Several processes: this one's index, 0 .. num_processes - 1.", lower_bound=0)


def _resolve_config(argv: list[str]) -> tuple[list[str], str]:
    """argv with `--config=FILE` first (the last --config given, or default), and that --config as given.

    ml_collections needs --config before any --config.GROUP.FIELD; a user may type them in any order.

    Raises:
      ValueError: an unknown config name or a missing config file.
    """
    rest, value, i = [], "default", 1
    while i < len(argv):
        arg = argv[i]
        if arg in CONFIG_FLAGS and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if arg.startswith(tuple(f"{f}=" for f in CONFIG_FLAGS)):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return [argv[0], f"--config={configs.resolve(value)}", *rest], value


def _show(value) -> str:
    return "''" if value == "" else str(value)


def config_help(config, docs: dict[str, str], width: int = 40) -> str:
    """One line per config field, `--config.GROUP.FIELD=VALUE  documentation`, in the order of `docs`."""
    lines, config = [], configs.flatten(config)
    for field in [*(f for f in docs if f in config), *sorted(set(config) - set(docs))]:
        flag = f"  --config.{field}={_show(config[field])}"
        gap = "\n" + " " * (width + 2) if len(flag) > width else " " * (width + 2 - len(flag))
        lines.append(f"{flag}{gap}{docs.get(field, '')}")
    return "\n".join(lines)


def usage(config_value: str = "default") -> str:
    """The --help text: how to call, this CLI's flags, and every config field with its value and documentation."""
    config = configs.load(config_value)
    module_flags = flags.FLAGS.module_help(sys.modules[__name__])
    return (
        f"{__doc__}\nflags:\n{module_flags}\n\n"
        f"config fields (values of --config {config_value}; override with --config.GROUP.FIELD=VALUE):\n"
        f"{config_help(config, configs.field_docs())}\n"
    )


def _override_fields(argv: list[str]) -> list[str]:
    """GROUP.FIELD of each --config.GROUP.FIELD[=VALUE] in argv."""
    prefixes = tuple(f"{f}." for f in CONFIG_FLAGS)
    return [arg.split("=", 1)[0].split(".", 1)[1] for arg in argv[1:] if arg.startswith(prefixes)]


def main(argv: list[str] | None = None) -> None:
    """The `fastgan-train` command: parses argv (default: sys.argv) and trains."""
    argv = list(sys.argv if argv is None else argv)
    try:
        argv, config_value = _resolve_config(argv)
    except ValueError as e:
        launch.fail(str(e))
    if any(arg in HELP_ARGS for arg in argv[1:]):
        print(usage(config_value))
        return
    if not any(re.match(r"--?workdir(=|$)", arg) for arg in argv[1:]):  # before absl loads the config file
        launch.fail(MISSING_WORKDIR)
    try:
        check_fields(_override_fields(argv))  # ml_collections would raise a bare AttributeError
    except ConfigError as e:
        launch.fail(str(e))
    saved_argv, sys.argv = sys.argv, argv  # ml_collections reads the overrides from sys.argv, Grain's workers too
    try:
        _train(argv)
    finally:
        sys.argv = saved_argv


def _train(argv):
    try:  # absl's own parse errors (a value of the wrong type, an unknown flag) would exit 1
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        launch.fail(f"{e} (--help lists every flag and config field)")
    f = flags.FLAGS
    if not f.workdir:
        launch.fail(MISSING_WORKDIR)
    if len(rest) > 1:
        launch.fail(f"unexpected arguments: {' '.join(rest[1:])}")
    logging.use_absl_handler()  # as absl's app.run: library warnings as absl lines
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    config = f.config
    if f.data:
        config.data.source = f.data
    hosts.initialize(f.coordinator_address, f.num_processes, f.process_id)  # before anything touches a device
    try:
        validate(config, num_devices=jax.device_count(), workdir=f.workdir)  # before anything is loaded or compiled
        trainer.train_and_evaluate(config, f.workdir)
    except (
        ConfigError,
        data.DataError,
        checkpoints.ConfigMismatchError,
        checkpoints.DamagedCheckpointError,
        NotADirectoryError,
        weights.WeightsNotFoundError,
        runs.WarmStartError,
        convert.OfficialCheckpointError,
        workdir.WorkdirBusyError,
    ) as e:  # the user's input: exit 2, and nothing of a run was written
        launch.fail(str(e))
    except (safeguards.DiskFullError, safeguards.NonFiniteError) as e:  # the run's failure, after its last checkpoint
        sys.exit(f"error: {e}")
    except safeguards.Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(128 + e.signum)
    # A Ctrl-C that the training loop does not handle itself (while starting up) ends in launch.run, at once.


if __name__ == "__main__":
    main()
