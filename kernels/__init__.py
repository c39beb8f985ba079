"""Triton kernels with their pure-torch twins (imported as `fastpose.kernels`).

Each op lives in one file: the Triton kernel, its launcher, the torch twin (the spec) and the dispatch
(CUDA tensors run Triton, CPU tensors run the twin).
"""
