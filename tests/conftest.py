"""Settings every test shares."""

import os

import torch

# Tiny models on a 2-core machine: handing work between threads costs more than the
# maths, and subprocesses (training runs, DataLoader workers) inherit the variable.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
