"""Every tolerance of the parity suite, each with the measurement that justifies it.

    python -m parity.report --sizes tiny     # re-measure (default sizes: drop --sizes)

Measured on CPU (torch 2.14.1, JAX 0.10.2, onnxruntime 1.32, float32; 2-core AMD EPYC) over the
test grids in parity/test_*.py, 4-5 seeds each, and at the tutorial sizes (hidden 256, 2
layers, batch 64). Float32 carries 24 bits (one ulp of 1.0 is 1.2e-7); two correct
implementations that add in different orders differ by a few ulps, while the bugs these checks
exist for (a swapped gate, b_hn outside r * (...), a missing bias, a wrong Adam constant) move
results by 1e-3 or more. On GPU TF32 must be off (parity/conftest.py), and three tolerances are
wider there (the *_GPU values below, chosen by ON_GPU): cuBLAS's and XLA's GPU kernels sum in
other orders and their tanh/sigmoid round differently from the CPU's, which 28 recurrent steps
amplify (measured with `python -m benchmarks.gpu_check`, docs/GPU.md).
"""
import torch

# torch's device decides, as in parity/measure.py: the suite runs on the GPU when there is one.
ON_GPU = torch.cuda.is_available()

# Forward pass: every step's output, final h and c (bounded by tanh: absolute is the right
# scale), logits. Measured at most 4.3e-7 over the 48 shapes x variants of test_forward.py and
# 4.5e-7 at the tutorial sizes, i.e. ~4 ulps; a change of 1e-3 in one bias vector already
# moves every output by more than 1e-4 (test_tolerance_catches_a_small_weight_change).
FORWARD_ATOL_CPU = 1e-5
# H200 (torch 2.11 + cuDNN, JAX 0.11.2, 2026-11-27): at most 1.06e-5 (rnn, hidden 8, 2 layers, 28
# steps, batch 33, both scan forms); everything else within FORWARD_ATOL_CPU. 3x headroom.
FORWARD_ATOL_GPU = 3e-5
FORWARD_ATOL = FORWARD_ATOL_GPU if ON_GPU else FORWARD_ATOL_CPU

# Gradients: ||g_torch - g_jax|| / max(||g_torch||, GRAD_NORM_FLOOR) per parameter tensor, so
# entries that are ~0 in both do not turn rounding noise into huge elementwise ratios.
# Measured at most 9.0e-7 (test grid) and 1.3e-6 (tutorial sizes); against a float64 reference
# each framework is off by 1e-7..1.4e-6 on its own, so this is rounding, with ~8x headroom.
GRAD_RTOL_CPU = 1e-5
# H200: at most 1.41e-5 (rnn-all, hidden 17, 3 layers, 28 steps, batch 33). 3.5x headroom.
GRAD_RTOL_GPU = 5e-5
GRAD_RTOL = GRAD_RTOL_GPU if ON_GPU else GRAD_RTOL_CPU
# A tensor whose gradient is exactly zero in both frameworks (weight_hh with seq_len 1: h0 = 0)
# compares as 0 / floor = 0 instead of 0 / 0.
GRAD_NORM_FLOOR = 1e-12

# ONNX: onnxruntime's logits vs torch's and vs JAX's on random inputs, batch 1 and 257.
# Measured 3e-8..7e-7 (tiny and tutorial sizes, batches 1 to 257). export/verify.py allows 1e-3 on trained
# models over all 10,000 test images, where one image drifted 4.4e-5; here the weights are
# fresh and the inputs few, so the forward tolerance applies.
ONNX_ATOL = FORWARD_ATOL_CPU  # onnxruntime runs on the CPU; on the H200 all ONNX checks held it too

# Training (test_training.py: hidden 8, 2 layers, batch 16, lr 0.005, 20 steps on synthetic
# data, real TorchBackend/JaxBackend). Two effects, both measured:
# 1. Adam's first step is lr * g / (|g| + eps) with eps = 1e-8: on an element whose gradient is
#    ~1e-8, a rounding-level change of g changes the step by a sizeable part of lr. Torch's own
#    float32 run differs from its float64 run by up to 4.5e-5 after step 1 (lstm-all, one seed
#    of 5), and torch vs JAX by the same 4.5e-5; usually 1e-7..2e-6. At the tutorial sizes:
#    torch vs JAX up to 1.4e-4, torch float32 vs float64 up to 8.1e-5. Bound: lr / 25.
TRAIN_PARAMS_ATOL_FIRST = 2e-4
# 2. After that the gap may grow, each step starting from the last one's slightly different
#    weights. With optax.adam it grew steadily (+1.7e-7 per step): optax computes the bias
#    correction 1 - 0.999**t in float32 (0.999 rounds to 0.99900001), so every update was ~7.5e-6
#    relatively smaller than torch's. jax_impl's scale_by_adam_exact computes it as torch does;
#    measured since (hidden 8, 20 steps, the 6 cell x head combinations): at most +3.7e-8 per
#    step, 1.7e-6 after 20 steps in total. The gap after step k must stay below
#    gap(1) + (k - 1) * TRAIN_PARAMS_GROWTH (5x headroom).
TRAIN_PARAMS_GROWTH_CPU = 2e-7
# H200: the gap moves more from step to step, up and down: at most +1.4e-6 in one step (gru-last:
# 4.99e-5 after step 1, 5.13e-5 after 5, 5.08e-5 after 20), lstm-all +3.4e-7, rnn-last +4.4e-7.
# 3.5x headroom. On a GPU this check no longer sees an Adam error as small as optax's float32
# bias correction (+1.7e-7 per step, above); ADAM_RTOL, which holds on the GPU too, still does.
TRAIN_PARAMS_GROWTH_GPU = 5e-6
TRAIN_PARAMS_GROWTH = TRAIN_PARAMS_GROWTH_GPU if ON_GPU else TRAIN_PARAMS_GROWTH_CPU
# Batch losses over the 20 steps: measured at most 4.8e-7 with the exact bias correction (1.1e-5
# with optax.adam's). Also bounds the loop's logged and test losses (averages of the same).
TRAIN_LOSS_ATOL = 1e-5
TRAIN_STEPS = 20
# At the tutorial sizes these bounds do not apply and are not asserted: lr 0.005 makes the first
# 20 steps chaotic there (the rnn loss jumps to 17 at step 5) and even torch float32 vs float64
# differs by 4e-3 in the weights after 20 steps; `python -m parity.report` shows those numbers.

# Adam alone (same gradients into both make_optimizers): distance from exact float64 Adam
# relative to the distance travelled. torch.optim.Adam: 4.5e-7..5.2e-7 over 20 steps (its bias
# correction is computed in float64 on the host); jax_impl's scale_by_adam_exact 5.1e-7..5.2e-7
# (seeds 0, 1); optax.adam's was 6.7e-6..8.1e-6, see above. 4x over float32's own error.
ADAM_RTOL = 2e-6

# Slow check, one epoch of full MNIST per framework from the same weights (lstm-last measured, CPU):
# 938 float32 Adam steps on a chaotic trajectory leave two different, equally good models.
# - constant lr 0.005 (the tutorial's): torch 96.96%, JAX 97.57% (0.61 points apart); but torch
#   alone, with its initial weights nudged by one ulp (twice) or lr x (1 - 7.5e-6), gave 97.10%,
#   97.01%, 96.75%, and JAX with an exact Adam bias correction 97.08%: a 0.35-point spread from
#   rounding alone, so at constant lr a 0.3-point check would measure noise, not the frameworks.
# - cosine decay to 0 (what test_mnist_epoch.py runs): torch 98.07%, JAX 98.02%, torch nudged by
#   one ulp 98.18%; test losses 0.067, 0.066, 0.062. 0.3 points (30 of 10,000 images) is ~3x the
#   spread seen.
MNIST_ACCURACY_GAP = 0.003

# Data parallel vs one process (tests/test_distributed.py: hidden 8, 2 layers, global batch 16,
# lr 0.005, 20 steps on synthetic data, 2 workers: torch DDP over gloo under torchrun, JAX over 2
# CPU devices). Same arithmetic with the sums split in two and added after: rounding only.
# Measured 2026-11-27 (torch 2.14.1, JAX 0.10.2, 2-core AMD EPYC):
# - `python -m tests.test_distributed` (rnn, gru, lstm, lstm-last x seeds 0, 1; 20 full batches;
#   JAX then still partitioned by jit alone, before the shard_map step): per-step losses at most
#   4.8e-7 (torch) and 4.8e-7 (JAX) apart, final weights 1.5e-7 (torch) and 1.0e-7 (JAX).
# - the tests themselves (lstm-last, last batch partial, JAX with the shard_map step): losses
#   3.6e-7 (torch) and 2.4e-7 (JAX), weights 1.0e-7 (both); DDP(2) vs JAX(2) 1.9e-7 (within the
#   cross-framework TRAIN_* bounds above).
# - a 2-worker run stopped by SIGTERM and resumed on 1 process / 1 device (hidden 12, 2 epochs of
#   40 steps, worker 1's last shard all padding) vs the uninterrupted 2-worker run: torch weights
#   1.3e-7..1.5e-7, losses 1.0e-7..1.6e-7; JAX weights 3.9e-7, losses 6.4e-8.
# Bounds: ~4x the largest loss gap, ~2.5x the largest weight gap. (Not measured: what a wrong
# shard or an unmasked padding row would do; they change the gradient itself, not its rounding.
# A gradient summed instead of averaged over workers is NOT caught by weights: Adam is nearly
# scale-invariant; the logged losses, summed separately, would still match.)
# The first-step Adam amplification described above (TRAIN_PARAMS_ATOL_FIRST) can in principle hit
# DP too (elements with |g| ~ 1e-8); it did not in these runs; the tests use fixed seeds.
DP_LOSS_ATOL = 2e-6
DP_PARAMS_ATOL = 1e-6
