"""The one-line machine and device descriptions written into run summaries and benchmarks."""

import os

import torch

from blindsr.machine import device_name, machine_description


def test_machine_description_names_the_cpu_count():
    text = machine_description()
    assert text.endswith(f"{os.cpu_count()} logical CPUs") and "\n" not in text


def test_device_name_gives_the_cpu_thread_count():
    n = torch.get_num_threads()
    assert device_name(torch.device("cpu")) == f"cpu ({n} thread{'s' * (n != 1)})"
    assert device_name(torch.device("meta")) == "meta"
