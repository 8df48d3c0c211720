"""Other people's files: official PyTorch FastGAN checkpoints (`convert`), the torch-free reader of torch's
zip pickles (`torch_pickle`) and the pretrained LPIPS/Inception weights of pip packages (`weights`)."""
