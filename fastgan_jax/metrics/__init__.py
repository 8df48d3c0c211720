"""Image metrics, jitted: FID/KID with the TF-FID Inception-v3 (`inception`), LPIPS with VGG16/AlexNet (`lpips`),
PSNR/SSIM (`similarity`)."""
