"""Training: the loop, losses and checkpoints (trainer), recipes (config), where batches come
from (pairs), device settings (accel), and windows on a lent accelerator (window, carry)."""
