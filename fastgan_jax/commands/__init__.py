"""The installed commands (`launch`: their entry points) and their argument handling: `train`
(fastgan-train), `sample`, `upscale`, `evaluate` and `evaluate_sr`. Nothing below imports these."""
