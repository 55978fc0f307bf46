"""Measurements of the machine the harness runs on: ``python -m ablations gpu-check``.

- ``device``: time on a device (CUDA events on a GPU, the host clock on the CPU) and its memory;
- ``optimizer_step``: one optimizer step at BERT's parameter shapes against its memory-traffic
  floor (also ``benchmarks/optimizer_step.py``);
- ``data``: random full-length examples in the batch contract, for timing;
- ``throughput``: training throughput of the Lightning module, FLOPs per step, MFU, device peaks;
- ``short_run``: a short run in bf16 against fp32, and killed and resumed against uninterrupted;
- ``device_tests``: ``tests/test_cuda.py`` run by pytest, its counts;
- ``environment``: versions, device, memory, bf16 support;
- ``gpu_check``: the command (the checks in order within a time budget, the JSON record);
- ``table``: a record as tables (stdout, and the GPU section of ``benchmarks/README.md``).
"""
