"""The one-line machine and device descriptions written into run summaries and benchmarks, and
the host memory free for a job."""

import os

import torch

from blindsr.machine import available_memory, device_name, machine_description


def test_machine_description_names_the_cpu_count():
    text = machine_description()
    assert text.endswith(f"{os.cpu_count()} logical CPUs") and "\n" not in text


def test_device_name_gives_the_cpu_thread_count():
    n = torch.get_num_threads()
    assert device_name(torch.device("cpu")) == f"cpu ({n} thread{'s' * (n != 1)})"
    assert device_name(torch.device("meta")) == "meta"


def test_available_memory_is_a_plausible_byte_count():
    free = available_memory()
    if free is None:  # a system without /proc/meminfo
        return
    assert 0 < free < 1 << 50
    big = torch.empty(64 << 20, dtype=torch.uint8).fill_(1)  # 64 MiB, touched
    assert available_memory() < free + (48 << 20)  # it does not grow by the allocation
    del big
