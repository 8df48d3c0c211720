"""Training: the compiled step (`step`, pure math) and the experiment around it (`loop`: setup, logging,
checkpoints, rollbacks, signals); the train state (`state`), float16 loss scaling (`loss_scale`), streamed
batches (`pipeline`), several processes (`hosts`), Orbax checkpoints (`checkpoints`), config rules
(`validate`) and saved runs as objects (`runs`)."""
