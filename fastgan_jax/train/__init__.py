"""Training: the compiled step (`step`, pure math) and the experiment around it (`trainer`: setup and the loop),
with its parts by concern: the run's folder, resume and metadata (`workdir`), logging (`writer`), checkpoints
and samples (`actions`), rollbacks, signals and a full disk (`safeguards`), the input pipeline (`pipeline`);
the train state (`state`), float16 loss scaling (`loss_scale`), several processes (`hosts`), Orbax
checkpoints (`checkpoints`), memory and remat=auto (`memory`), config rules (`validate`) and saved runs as
objects (`runs`)."""
