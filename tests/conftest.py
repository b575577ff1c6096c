import torch

# Two cores, and tests run tiny models: one thread avoids oversubscription and keeps timings steady.
torch.set_num_threads(1)
