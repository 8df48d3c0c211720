"""Official FastGAN hyperparameters at 256 px (official train.py defaults).

    fastgan-train --data DIR --workdir runs/my_run
    python train.py --data DIR --workdir runs/my_run

On one consumer GPU this is the paper's setting: batch 8, Adam 2e-4
(0.5, 0.999), 50k steps, DiffAugment color+translation, EMA 0.999. Few-shot
sets of ~100 images reach recognisable samples after a few thousand steps and
the paper's quality around 20-50k. float32 runs on every card; remat=auto
sizes the step to the card at start (docs/memory.md, from XLA:GPU's
figures): on a 4 GB GTX 1050 Ti it takes `blocks` (2.00 GiB of the 2.70 GiB
it allows itself), on 8 GB and larger cards `none` (2.9-3.0 GiB, 16% fewer
FLOPs per step: 1446 against 1727 GFLOP). Turing cards run faster with
`--config.model.precision=float16`, Ampere and newer with `bfloat16`.

The fields are grouped by role: `data` (the input pipeline), `model` (the
networks: `make_models(**config.model)`), `optim`, `loss`, `train` (the run)
and `log` (logs, samples, checkpoints). Each field's trailing comment is its
documentation: `fastgan-train --help` lists it
(`fastgan_jax.configs.field_docs`), and a test checks every field has one.
"""

import ml_collections

from fastgan_jax.data import DEFAULT_DATA


def get_config():
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict()
    c.data.source = str(DEFAULT_DATA)  # image folder (searched recursively) or tfds:NAME[:SPLIT]; default: the smileys
    c.data.aspect = "center_crop"  # "center_crop", or "stretch" (resize without cropping, as the official does)
    c.data.background = (255, 255, 255)  # RGB composited behind transparent pixels
    c.data.on_device = "auto"  # "auto" (when the set fits), "yes", "no": else batches stream from the host
    c.data.stream_from = "memory"  # streamed batches come from "memory" (decoded once) or "files" (decoded per batch)
    c.data.workers = -1  # Grain processes decoding batches with stream_from=files; -1: one per core up to 8
    c.data.cache_dir = ""  # decoded-image cache; "" = ~/.cache/fastgan_jax
    c.data.tfds_data_dir = ""  # for --data tfds:NAME; "" = TFDS's default (~/tensorflow_datasets)
    c.model = ml_collections.ConfigDict()
    c.model.im_size = 256  # training resolution: 256, 512, 1024 (official designs), or 64, 128 (CPU shrinks)
    c.model.ngf = 64  # generator width (official: 64)
    c.model.ndf = 64  # discriminator width (official: 64)
    c.model.nz = 256  # latent size
    c.model.dec_width = 32  # width of the discriminator's reconstruction decoders
    c.model.precision = "float32"  # "float32", "bfloat16" or "float16" (dynamic loss scale); params, optimizer: float32
    c.model.remat = "auto"  # recompute activations to save memory: "none", "blocks", "full"; "auto": first that fits
    c.optim = ml_collections.ConfigDict()
    c.optim.batch_size = 8  # global batch, split over all devices (of every process)
    c.optim.lr = 2e-4  # Adam learning rate, both networks
    c.optim.beta1 = 0.5  # Adam beta1
    c.optim.beta2 = 0.999  # Adam beta2
    c.optim.ema_decay = 0.999  # decay of the generator's exponential moving average (what samples use)
    c.loss = ml_collections.ConfigDict()
    c.loss.policy = "color,translation"  # DiffAugment policy: comma-separated color, translation, cutout
    c.loss.recon = "lpips"  # reconstruction distance: "lpips" (LPIPS-VGG, official), "l1" or "mse"
    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 50_000  # train until this step (a resumed run continues to it)
    c.train.seed = 0  # root random seed
    c.train.init_from = ""  # fine-tune: a run folder or an official .pth/.npz whose G, D and EMA weights start this run
    c.train.time_limit_s = 0.0  # > 0: stop (checkpointed) after this many seconds; running again continues
    c.log = ml_collections.ConfigDict()
    c.log.log_every = 100  # steps between logged losses (TensorBoard, metrics.jsonl, console)
    c.log.sample_every = 1000  # steps between sample grids and reconstructions in RUN/samples
    c.log.checkpoint_every = 5000  # steps between checkpoints in RUN/checkpoints
    c.log.keep_checkpoints = 3  # latest checkpoints kept
    c.log.num_samples = 64  # images in each sample grid
    c.log.recalib_samples = 2048  # z used to re-estimate the EMA generator's BatchNorm statistics
    c.log.recalib_batch = 64  # batch size of the BatchNorm re-estimation
    c.log.fid_every = 0  # > 0: FID (TF-FID Inception) every N steps, logged, and the best-FID checkpoint kept
    c.log.fid_samples = 5000  # generated images per FID during training
    return c
