"""remat=auto (`fastgan_jax.train.memory`): the choice from compiled figures, and training's use of it.

The deviceless GPU side (a card's memory as the limit, XLA:GPU's figures) is in benchmarks_test.
"""

import jax
import pytest
from helpers import first_step, tiny_config

from fastgan_jax.train import checkpoints, memory, trainer
from fastgan_jax.train.validate import ConfigError

GiB = 2**30


def figures(total_gib, *, temp_gib=None):
    """`step_bytes`-like figures: arguments 0.5 GiB (nothing aliased), no outputs, the rest temporaries."""
    temp = int((temp_gib if temp_gib is not None else total_gib - 0.5) * GiB)
    return {"argument": GiB // 2, "output": 0, "temp": temp, "alias": 0, "total": GiB // 2 + temp}


def test_auto_takes_the_first_setting_that_fits_the_limit_less_the_margin():
    table = {"none": figures(3.0), "blocks": figures(2.0), "full": figures(1.5)}
    compiled = []

    def step_memory(remat):
        compiled.append(remat)
        return table[remat]

    choice = memory.choose_remat(step_memory, 3 * GiB, batch_size=8)  # budget 2.7 GiB: none (3.0) does not fit
    assert (choice.remat, compiled) == ("blocks", ["none", "blocks"])  # full is never compiled
    assert choice.needs == {"none": table["none"]["total"], "blocks": table["blocks"]["total"]}
    assert choice.budget == int(3 * GiB * (1 - memory.MARGIN))
    assert choice.describe() == (
        "remat=auto: blocks (none needs 3.00 GiB, blocks needs 2.00 GiB; the device allows 3.00 GiB, "
        "2.70 GiB with a 10% margin)"
    )
    compiled.clear()
    assert memory.choose_remat(step_memory, int(3.0 * GiB / 0.9) + 1, batch_size=8).remat == "none"
    assert compiled == ["none"]  # exactly at the budget fits


def test_no_limit_means_none_and_nothing_compiled():
    def step_memory(remat):
        raise AssertionError("nothing is compiled without a limit")

    choice = memory.choose_remat(step_memory, None, batch_size=8)
    assert (choice.remat, choice.needs) == ("none", {})
    assert choice.describe() == "remat=auto: none (this device reports no memory limit)"
    cpu = jax.devices("cpu")
    assert memory.device_limit(cpu) is None  # the CPU reports no limit: training there takes `none`


def test_nothing_fits_says_which_batch_would():
    # full: 0.5 GiB of state and data, 4 GiB of temporaries for batch 8 (0.5 GiB an image); budget 2.7 GiB
    table = {"none": figures(9.0), "blocks": figures(6.0), "full": figures(4.5)}
    with pytest.raises(memory.StepDoesNotFitError) as e:
        memory.choose_remat(table.__getitem__, 3 * GiB, batch_size=8, multiple=2)
    assert str(e.value) == (
        "--config.model.remat=auto: the step needs 4.50 GiB even with remat=full, more than the 2.70 GiB this device "
        "allows (3.00 GiB less a 10% margin); --config.optim.batch_size=4 would fit (estimated from remat=full's "
        "figures)"
    )  # (2.7 - 0.5) / 0.5 = 4.4 images: 4, a multiple of the 2 devices
    assert isinstance(e.value, ConfigError)  # the commands print it as one line, exit 2
    table["full"] = figures(0.5 + 8 * 3.0)  # 3 GiB an image: not even one fits
    with pytest.raises(memory.StepDoesNotFitError, match="no batch would: a smaller --config.model.im_size"):
        memory.choose_remat(table.__getitem__, 3 * GiB, batch_size=8)


def test_training_resolves_auto_once_logs_it_and_the_run_keeps_it(tmp_path, monkeypatch, capsys):
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    monkeypatch.setattr(memory, "device_limit", lambda devices: GiB)  # as a GPU with 1 GiB for JAX would say
    try:
        exp, state = trainer.setup(tiny_config(tmp_path / "cache", remat="auto"), tmp_path / "run")
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert exp.meta["remat"] == "none" and exp.train_step.keywords["G"].remat == "none", exp.meta  # the step's G
        assert line.startswith("remat=auto: none (none needs 0.") and "the device allows 1.00 GiB" in line, line
        compiles.clear()
        state, metrics = first_step(exp, state)  # the step that setup compiled to measure: not compiled again
        assert not [e for e in compiles if e == "/jax/core/compile/backend_compile_duration"], compiles
        checkpoints.save(exp.mngr, 1, state, exp.cfg, exp.meta)  # as actions.save_checkpoint saves the run
        # The resolved setting is the run's metadata, beside the recipe as given.
        assert checkpoints.saved_meta(exp.mngr)["remat"] == "none"
        assert checkpoints.saved_config(exp.mngr)["model"]["remat"] == "auto"
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
        exp.mngr.close()

    # A resume with auto keeps the run's setting and compiles nothing to choose it.
    monkeypatch.setattr(memory, "device_limit", lambda devices: pytest.fail("a resume measures nothing"))
    exp, _ = trainer.setup(tiny_config(tmp_path / "cache", remat="auto"), tmp_path / "run")
    exp.mngr.close()
    assert exp.meta["remat"] == "none"
    assert "remat=auto: none, as the run was started" in capsys.readouterr().out
